"""``bastion error-report list|show|resolve|download`` against a real service (uvicorn on loopback)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fleet_world import make_status_device
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bastion.cli._client import OperatorConfig, save_config
from bastion.cli.apps import app as cli_app
from bastion.cli.error_report_cmds import parse_since
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.service.config import Settings
from bastion.service.errorreports.service import CSV_COLUMNS
from bastion.service.models import ErrorDailyCount, ErrorEvent
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient


@pytest.fixture
def logged_in(tmp_path: Path, live_url: str, tenant: CreatedTenant, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    save_config(OperatorConfig(url=live_url, token=tenant.admin_token))
    return tenant.admin_token


def run(*args: str) -> str:
    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_list_show_resolve_and_download(
    *,
    logged_in: str,
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    now = clock()
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    r = client.post(ENDPOINT, content=batch(device, iat=now, records=[crash(now, count=2)]), headers=COSE)
    assert r.status_code == 200, r.text
    listed = json.loads(run("error-report", "list", "--json"))
    assert len(listed["items"]) == 1
    bucket = listed["items"][0]["bucket_id"]
    assert "ZeroDivisionError" in run("error-report", "list", "--state", "open")
    assert json.loads(run("error-report", "list", "--state", "resolved", "--json"))["items"] == []
    shown = json.loads(run("error-report", "show", bucket, "--json"))
    assert shown["bucket"]["event_count"] == 2
    assert "recent events" in run("error-report", "show", bucket)
    assert "resolved in 1.0.0" in run("error-report", "resolve", bucket)
    out = tmp_path / "errors.csv"
    run("error-report", "download", "--format", "csv", "--since", "3650d", "-o", str(out))
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1][0] == device.device_id
    assert json.loads(run("error-report", "download", "--format", "json"))[0]["EventCount"] == 2
    one = json.loads(run("error-report", "download", "--format", "json", "--bucket", bucket))
    assert [e["Bucket"] for e in one] == [bucket]
    with pytest.raises(CliError):
        run("error-report", "download", "--bucket", "b" + "0" * 16)  # none of ours: 404
    assert [b["bucket_id"] for b in json.loads(run("error-report", "list", "--include-info", "--json"))["items"]] == [
        bucket
    ]
    with pytest.raises(CliError):
        run("error-report", "show", "b0000000000000000")
    with pytest.raises(CliError):
        run("error-report", "list", "--since", "last tuesday")


def test_parse_since() -> None:
    now = dt.datetime(2026, 1, 8, tzinfo=dt.UTC)
    assert parse_since("7d", now=now) == "2026-01-01T00:00:00+00:00"
    assert parse_since("2026-01-02T03:04:05", now=now) == "2026-01-02T03:04:05+00:00"


def test_prune_runs_one_retention_pass_on_the_local_database(
    *,
    tenant: CreatedTenant,
    client: TestClient,
    settings: Settings,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``error-report prune`` rolls the events past retention up and forgets old batch IDs; a second pass is a no-op."""
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    now = clock()  # T0, months before the wall clock the command uses: past both retentions
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    records = [crash(now, count=3), crash(now, exception="KeyError")]
    assert client.post(ENDPOINT, content=batch(device, iat=now, records=records), headers=COSE).status_code == 200
    first = json.loads(run("error-report", "prune", "--json"))
    assert first == {"events_rolled_up": 2, "batches_deleted": 1, "daily_deleted": 0}
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ErrorEvent)) == 0
        assert sorted(d.events for d in session.scalars(select(ErrorDailyCount))) == [1, 3]
    assert json.loads(run("error-report", "prune", "--json")) == {
        "events_rolled_up": 0,
        "batches_deleted": 0,
        "daily_deleted": 0,
    }
    assert "error-report retention" in run("error-report", "prune")
    monkeypatch.setenv("BASTION_ERROR_EVENT_RETENTION_DAYS", "soon")
    with pytest.raises(CliError):
        run("error-report", "prune")
