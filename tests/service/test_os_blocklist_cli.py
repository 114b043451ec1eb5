"""``bastion os clear-blocklist`` and ``os blocklist-clears`` against a real service (uvicorn on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleet_world import Fleet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bastion.cli._client import OperatorConfig, save_config
from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.crypto.keys import generate_private_key
from bastion.os.updates.pointer import signed_clears
from bastion.service.config import Settings
from bastion.service.models import AuditEvent
from bastion.service.tenants.service import CreatedTenant
from bastion.service.tuf.repository import load_state
from conftest import TestClient


@pytest.fixture
def fleet(  # noqa: PLR0917 - pytest fixtures
    tmp_path: Path,
    live_url: str,
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> Fleet:
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    save_config(OperatorConfig(url=live_url, token=tenant.admin_token))
    return Fleet(client, tenant.admin_token, session_factory)


def run(*args: str) -> str:
    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_clear_blocklist_signs_a_clear_into_the_group_and_lists_it(
    fleet: Fleet, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    image = fleet.os(generate_private_key(), "1.1.0")
    group = fleet.groups["Production"]
    cleared = json.loads(run("os", "clear-blocklist", "1.1.0", "--group", group, "--json"))
    assert (cleared["sha256"], cleared["version"], cleared["device_id"]) == (image["measurement"], "1.1.0", None)
    custom = load_state(settings, group).targets.signed.unrecognized_fields["custom"]
    assert [c.sha256 for c in signed_clears(custom, "ab" * 32)] == [image["measurement"]]
    assert "cleared OS 1.1.0" in run("os", "clear-blocklist", image["measurement"], "--group", group)
    listed = json.loads(run("os", "blocklist-clears", "--group", group, "--json"))
    assert [c["version"] for c in listed] == ["1.1.0", "1.1.0"]
    assert "OS blocklist clears of" in run("os", "blocklist-clears", "--group", group)
    with session_factory() as session:
        assert len(session.scalars(select(AuditEvent).where(AuditEvent.action == "os_blocklist.clear")).all()) == 2


def test_clear_blocklist_refusals_are_clear_errors(fleet: Fleet) -> None:
    fleet.os(generate_private_key(), "1.1.0")
    group = fleet.groups["Production"]
    with pytest.raises(CliError, match="no OS image"):
        run("os", "clear-blocklist", "9.9.9", "--group", group)
    with pytest.raises(CliError):
        run("os", "clear-blocklist", "1.1.0", "--group", group, "--device", "not-a-device")
    with pytest.raises(CliError):
        run("os", "clear-blocklist", "1.1.0", "--group", "Nope/Nope")
    assert json.loads(run("os", "blocklist-clears", "--group", group, "--json")) == []
