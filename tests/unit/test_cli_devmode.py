"""CLI: device sideload/start/stop/logs and enable/disable-development against a running local device API."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_support import run
from test_devmode import CA_CERT, DEV_KEY, STRANGER_KEY, TENANT, capability
from test_updates_support import APP_A, build_app

from bastion.boot.factory import manufacture_device
from bastion.boot.vendor import init_vendor, load_vendor
from bastion.crypto.certs import certificate_pem
from bastion.os.apps.manager import AppLimits, AppManager
from bastion.os.apps.store import AppStore
from bastion.os.devmode.capability import DevelopmentMode
from bastion.os.devmode.local_api import LocalApi
from bastion.os.state import OsState, StateDir
from bastion.os.updates.control import ControlServer
from bastion.os.updates.events import EventQueue

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str, EventQueue]]:
    """A manufactured device whose OS (its local API) is up, as after its first attestation."""
    monkeypatch.setenv("COLUMNS", "200")
    vendor = load_vendor(init_vendor(tmp_path / "vendor", now=NOW).root)
    dev = tmp_path / "dev"
    device_id = manufacture_device(dev, vendor, now=NOW)
    state_dir = StateDir(dev / "os-state")
    state_dir.save_credentials(b"", certificate_pem(CA_CERT))
    state_dir.save_state(OsState(device_id=device_id, tenant_id=TENANT))
    events = EventQueue(state_dir.events_path)
    store = AppStore(dev / "apps")
    apps = AppManager(
        store, log_dir=state_dir.app_log_dir, data_dir=state_dir.app_data_dir, events=events,
        limits=AppLimits(stop_grace_s=3),
    )  # fmt: skip
    api = LocalApi(
        dev=DevelopmentMode(state_dir, device_id=device_id, events=events),
        store=store,
        apps=apps,
        events=events,
        pinned_keys=[],
        clock=lambda: NOW,
        spool_dir=state_dir.staging_dir,
    )
    server = ControlServer(state_dir.control_socket_path, {}, requests=api.requests(), uploads=api.uploads())
    server.start()
    try:
        yield dev, device_id, events
    finally:
        server.close()
        apps.stop_all()


def test_sideload_start_stop_logs_through_the_cli(
    device: tuple[Path, str, EventQueue],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dev, device_id, events = device
    image = tmp_path / "app.img"
    image.write_bytes(build_app(tmp_path / "build", DEV_KEY, APP_A, "1.0.0"))
    code, _, err = run(monkeypatch, capsys, "device", "sideload", "--dir", str(dev), str(image))
    assert code == 1
    assert "(no_capability)" in err
    assert "enable-development" in err
    assert events.all()[-1].kind == "sideload_refused"

    cap = tmp_path / "cap.cose"
    cap.write_bytes(capability(device_id=device_id))
    code, out, err = run(
        monkeypatch, capsys, "device", "enable-development", "--dir", str(dev), "--file", str(cap), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["kind"] == "appDevelopment"

    code, out, err = run(monkeypatch, capsys, "device", "sideload", "--dir", str(dev), str(image), "--json")
    assert code == 0, err
    assert json.loads(out)["component_id"] == APP_A
    log = dev / "os-state" / "apps" / f"{APP_A}.log"
    deadline = time.monotonic() + 10
    while not (log.exists() and b"hello" in log.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    code, out, _ = run(monkeypatch, capsys, "device", "logs", "--dir", str(dev), "app")  # by its name
    assert code == 0
    assert "hello from 1.0.0" in out
    code, out, _ = run(monkeypatch, capsys, "device", "stop", "--dir", str(dev), APP_A, "--json")
    assert (code, json.loads(out)["pid"]) == (0, None)
    code, out, _ = run(monkeypatch, capsys, "device", "start", "--dir", str(dev), APP_A, "--json")
    assert code == 0
    assert isinstance(json.loads(out)["pid"], int)
    code, _, err = run(monkeypatch, capsys, "device", "start", "--dir", str(dev), "no-such-app")
    assert code == 1
    assert "no single installed app" in err

    stranger = tmp_path / "stranger.img"
    stranger.write_bytes(build_app(tmp_path / "build2", STRANGER_KEY, APP_A, "1.1.0"))
    code, _, err = run(monkeypatch, capsys, "device", "sideload", "--dir", str(dev), str(stranger))
    assert code == 1
    assert "(signature)" in err
    assert "developer key" in err

    code, out, _ = run(monkeypatch, capsys, "device", "disable-development", "--dir", str(dev), "--json")
    assert (code, json.loads(out)) == (0, {"removed": True})
    code, _, err = run(monkeypatch, capsys, "device", "stop", "--dir", str(dev), APP_A)
    assert code == 1
    assert "(no_capability)" in err
    assert events.all()[-1].kind == "local_op_refused"


def test_the_local_commands_need_a_running_os(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(monkeypatch, capsys, "device", "start", "--dir", str(tmp_path), APP_A)
    assert code == 1
    assert "no OS is running" in err
