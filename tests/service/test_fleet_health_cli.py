"""``bastion fleet health`` and ``bastion device logs`` against a real service (uvicorn on loopback)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from pathlib import Path

import cbor2
import httpx
import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fleet_world import make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.service.config import Settings
from bastion.service.models import DeviceLogRequest
from conftest import FakeClock


def run(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(cli_app, list(args), input=stdin, catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture
def tenant_id(
    tmp_path: Path, settings: Settings, live_url: str, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> str:
    clock.now = dt.datetime.now(dt.UTC)
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    created = json.loads(run("tenant", "create", "acme", "--json"))
    run("login", "--url", live_url, stdin=created["token"])
    return str(created["tenant_id"])


def test_fleet_health_and_device_logs_from_the_cli(
    tenant_id: str, live_url: str, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    now = clock()
    good, bad = (
        make_status_device(session_factory, owner_tenant=tenant_id, master_key=master_key, now=now) for _ in "ab"
    )
    with httpx.Client(base_url=live_url) as http:
        for device, records in ((good, []), (bad, [crash(now)])):
            r = http.post(ENDPOINT, content=batch(device, iat=now, os_version="3.0.0", records=records), headers=COSE)
            assert r.status_code == 200, r.text
    rows = json.loads(run("fleet", "health", "--by", "os", "--window", "1h", "--json"))
    assert [(r["key"], r["devices"], r["crashed_devices"], r["crash_free_rate"]) for r in rows] == [
        ("3.0.0", 2, 1, 0.5)
    ]
    assert "50.0 %" in run("fleet", "health", "--by", "os")
    assert json.loads(run("fleet", "health", "--by", "group", "--json"))[0]["devices"] == 2

    first = json.loads(run("device", "logs", good.device_id, "--app", "app1", "--json"))
    assert first["state"] == "pending"

    with pytest.raises(CliError, match="did not upload"):
        run("device", "logs", good.device_id, "--app", "app1", "--wait", "1")

    with session_factory() as session:
        asked_before = set(session.scalars(select(DeviceLogRequest.id)).all())

    def device_uploads() -> None:
        """The device at its next check-in: it uploads the tail of the newest request."""
        for _ in range(100):
            with session_factory() as session:
                newest = session.scalars(
                    select(DeviceLogRequest.id).where(
                        DeviceLogRequest.state == "pending", DeviceLogRequest.id.not_in(asked_before)
                    )
                ).first()
            if newest is not None:
                break
            time.sleep(0.1)
        payload = {
            "v": 1,
            "device_id": good.device_id,
            "request_id": newest,
            "component_id": "app1",
            "iat": int(now.timestamp()),
            "text": "started\nTraceback: boom\n",
            "truncated": False,
        }
        body = sign1(cbor2.dumps(payload, canonical=True), good.key, x5chain=[certificate_der(good.cert)])
        httpx.post(f"{live_url}/api/v1/device/logs", content=body, headers=COSE, timeout=10)

    uploader = threading.Thread(target=device_uploads)
    uploader.start()
    try:
        out = run("device", "logs", good.device_id, "--app", "app1", "--wait", "20")
    finally:
        uploader.join()
    assert out == "started\nTraceback: boom\n"
