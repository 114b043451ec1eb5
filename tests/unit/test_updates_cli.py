"""CLI: device provision, device update-check (over the control socket) and device apps."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from _cli_support import run
from test_updates_support import APP_A, build_app

from bastion.boot.factory import manufacture_device
from bastion.boot.vendor import init_vendor, load_vendor
from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.hw.chip import Chip
from bastion.hw.flash import Partition
from bastion.os.apps.store import AppStore
from bastion.os.config import parse_config
from bastion.os.updates.control import ControlServer

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "200")
    vendor = load_vendor(init_vendor(tmp_path / "vendor", now=NOW).root)
    device = tmp_path / "dev"
    manufacture_device(device, vendor, now=NOW)
    return device


def test_provision_pins_app_keys_once(
    dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "app.pub.pem"
    key.write_bytes(public_key_pem(generate_private_key().public_key()))
    code, _, err = run(monkeypatch, capsys, "device", "provision", "--dir", str(dev), "--app-key", str(key))
    assert code == 1
    assert "no service URL" in err
    args = ["device", "provision", "--dir", str(dev), "--app-key", str(key), "--service", "http://svc:1", "--json"]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert json.loads(out)["app_signing_keys"] == 1
    code, out, _ = run(monkeypatch, capsys, *args[:6], "--update-interval", "600", "--json")
    assert code == 0
    assert json.loads(out) == {
        "service_url": "http://svc:1",
        "app_signing_keys": 1,  # the same key is not pinned twice
        "update_interval_s": 600.0,
        "app_updates": True,
        "insecure_no_sandbox": False,
    }
    config = parse_config(Chip.open(dev).flash.read(Partition.CONFIG))
    assert config.app_signing_keys == (key.read_text(),)
    key.write_text("not a key")
    code, _, err = run(monkeypatch, capsys, *args[:6])
    assert code == 1
    assert "not a P-256 public key" in err


def test_provision_insecure_no_sandbox_is_loud_in_device_info_and_undone_by_sandbox(
    dev: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["device", "provision", "--dir", str(dev), "--service", "http://svc:1"]
    code, out, err = run(monkeypatch, capsys, *base, "--insecure-no-sandbox", "--json")
    assert code == 0, err
    assert json.loads(out)["insecure_no_sandbox"] is True
    assert "WITHOUT sandboxes" in err
    assert parse_config(Chip.open(dev).flash.read(Partition.CONFIG)).insecure_no_sandbox
    code, out, err = run(monkeypatch, capsys, "device", "info", "--dir", str(dev))
    assert code == 0, err
    assert "INSECURE" in err
    assert "OFF (--insecure-no-sandbox)" in out
    code, out, err = run(monkeypatch, capsys, "device", "info", "--dir", str(dev), "--json")
    assert json.loads(out)["insecure_no_sandbox"] is True
    assert "INSECURE" in err  # loud in JSON mode too, on stderr
    code, out, err = run(monkeypatch, capsys, "device", "provision", "--dir", str(dev), "--sandbox", "--json")
    assert code == 0, err
    assert json.loads(out)["insecure_no_sandbox"] is False
    code, out, err = run(monkeypatch, capsys, "device", "info", "--dir", str(dev), "--json")
    assert json.loads(out)["insecure_no_sandbox"] is False
    assert "INSECURE" not in err


def test_update_check_without_a_running_os(
    dev: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(monkeypatch, capsys, "device", "update-check", "--dir", str(dev))
    assert code == 1
    assert "no OS is running" in err
    assert "bastion device run" in err


def test_update_check_and_apps_talk_to_the_os(
    dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = dev / "os-state"
    state.mkdir(mode=0o700)
    summary = {"at": "now", "result": "installed", "group_id": "g1", "installed": [
        {"component_id": APP_A, "version": "1.0.0"}], "refused": [], "failed": [], "detail": "",
        "next_check_at": "later", "report": "accepted"}  # fmt: skip
    layers = {"sandbox": "bubblewrap", "uid": 10001, "namespaces": ["user", "pid"], "seccomp_filters": 1,
              "landlock": {"abi": 7, "net": True, "scoped": ["signal"]}, "limits": {"nproc": 32}}  # fmt: skip
    status = {"apps": [{"component_id": APP_A, "pid": 4242, "crashes": 0, "sandbox": layers}]}
    server = ControlServer(state / "control.sock", {"update-check": lambda _: summary, "status": lambda _: status})
    server.start()
    key = generate_private_key()
    img = tmp_path / "a.img"
    img.write_bytes(build_app(tmp_path / "build", key, APP_A, "1.0.0"))
    # An old device's store, not moved to DEV/apps yet (its next boot does): `device apps` still reads it.
    AppStore(dev / "flash" / "apps").install(img, component_id=APP_A, version="1.0.0")
    try:
        code, out, err = run(monkeypatch, capsys, "device", "update-check", "--dir", str(dev), "--json")
        assert code == 0, err
        assert json.loads(out) == summary
        code, out, _ = run(monkeypatch, capsys, "device", "update-check", "--dir", str(dev))
        assert code == 0
        assert "installed" in out
        assert f"{APP_A} 1.0.0" in out
        code, out, _ = run(monkeypatch, capsys, "device", "apps", "--dir", str(dev), "--json")
        assert code == 0
        rows = json.loads(out)
        assert [(r["component_id"], r["version"], r["pid"]) for r in rows] == [(APP_A, "1.0.0", 4242)]
        assert rows[0]["sandbox"] == layers
        assert rows[0]["layers"] == "bwrap uid=10001 ns=user,pid seccomp landlock=7+net+scoped nproc=32"
        code, out, _ = run(monkeypatch, capsys, "device", "apps", "--dir", str(dev))
        assert code == 0
        assert "landlock=7" in out  # the table shows the layers too
    finally:
        server.close()


def test_a_new_service_url_keeps_the_pinned_app_keys(
    dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli.device_run_cmds import _config_for

    key = tmp_path / "app.pub.pem"
    key.write_bytes(public_key_pem(generate_private_key().public_key()))
    args = ["device", "provision", "--dir", str(dev), "--app-key", str(key), "--service", "http://svc:1"]
    assert run(monkeypatch, capsys, *args, "--update-interval", "600")[0] == 0
    # `device run --service` rewrites the config partition with the new URL only.
    config = _config_for(Chip.open(dev), "http://svc:2")
    assert (config.service_url, config.app_signing_keys, config.update_interval_s) == (
        "http://svc:2",
        (key.read_text(),),
        600.0,
    )
    assert parse_config(Chip.open(dev).flash.read(Partition.CONFIG)) == config
