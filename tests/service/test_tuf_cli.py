"""``bastion service tuf-refresh``: re-signs aging groups, reports each, fails with a hint on a wrong master key."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.service.config import Settings
from bastion.service.tuf import publish_group
from bastion.service.tuf.repository import load_state


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    key = secrets.token_bytes(32)
    monkeypatch.setenv("BASTION_HOME", str(home))
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(key).decode())
    monkeypatch.setenv("COLUMNS", "200")
    _register()
    return Settings(home=home, database_url="sqlite://", master_key=key)


def test_tuf_refresh_resigns_aging_groups(settings: Settings) -> None:
    real_now = dt.datetime.now(dt.UTC)
    aging, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    publish_group(settings, aging, [], now=real_now - dt.timedelta(hours=20))
    publish_group(settings, fresh, [], now=real_now)
    result = CliRunner().invoke(cli_app, ["service", "tuf-refresh", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["groups"] == 2
    assert report["refreshed"] == 1
    assert {r["group_id"]: r["refreshed"] for r in report["results"]} == {aging: True, fresh: False}
    assert f"group {aging}: re-signed" in result.stderr
    assert load_state(settings, aging).timestamp.signed.version == 2
    assert load_state(settings, fresh).timestamp.signed.version == 1

    table = CliRunner().invoke(cli_app, ["service", "tuf-refresh"])
    assert table.exit_code == 0
    assert "0 of 2 group(s) re-signed" in table.stdout


def test_tuf_refresh_with_another_master_key_fails_with_a_hint(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = str(uuid.uuid4())
    publish_group(settings, group, [], now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=20))
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    result = CliRunner().invoke(cli_app, ["service", "tuf-refresh"])
    assert isinstance(result.exception, CliError)
    assert group in result.exception.message
    assert result.exception.hint is not None
    assert "BASTION_MASTER_KEY" in result.exception.hint
    assert load_state(settings, group).timestamp.signed.version == 1
