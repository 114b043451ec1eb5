"""The ownership CLI against a real service on loopback and a real emulated device on the bench.

``bastion device claim --dir DEV`` boots the device (ROM, bootloader stage) and
has its monitor sign evidence over the claim challenge; then unclaim, release,
and the ownership history with its paging.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.service.config import Settings
from conftest import FakeClock


def run(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(cli_app, list(args), input=stdin, catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture
def bench(
    tmp_path: Path, settings: Settings, live_url: str, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> tuple[Path, str, dict[str, str]]:
    """A logged-in tenant, a trusted vendor and a flashed device; returns (DEV, device ID, other tenant)."""
    clock.now = dt.datetime.now(dt.UTC)  # the device's certificates carry the real time
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    vendor = tmp_path / "vendor"
    run("vendor", "init", "--dir", str(vendor))
    run("service", "trust-vendor", str(vendor / "ca.pem"))
    image = tmp_path / "os.img"
    run("os", "build", "--version", "1.0.0", "--key", str(vendor / "os-signing.key"), "-o", str(image))
    dev = tmp_path / "dev"
    device_id = json.loads(run("device", "manufacture", "--dir", str(dev), "--vendor", str(vendor), "--json"))[
        "device_id"
    ]
    run("device", "flash", "--dir", str(dev), "--os", str(image))
    tenant = json.loads(run("tenant", "create", "acme", "--json"))
    other = json.loads(run("tenant", "create", "other", "--json"))
    run("login", "--url", live_url, stdin=tenant["token"])
    return dev, device_id, other


def test_claim_with_the_device_at_hand_then_release(bench: tuple[Path, str, dict[str, str]]) -> None:
    dev, device_id, other = bench
    claimed = json.loads(run("device", "claim", "--dir", str(dev), "--json"))
    assert claimed["device_id"] == device_id
    with pytest.raises(CliError, match="already claimed by your tenant"):
        run("device", "claim", "--dir", str(dev))
    history = json.loads(run("device", "ownership", device_id, "--json"))
    assert [(e["event"], e["method"]) for e in history] == [("claim", "evidence")]

    released = json.loads(run("device", "release", device_id, "--to", other["tenant_id"], "--json"))
    assert released["to_tenant_id"] == other["tenant_id"]
    with pytest.raises(CliError, match="released to another tenant"):
        run("device", "claim", "--dir", str(dev))
    table = run("device", "ownership", device_id)
    assert "release" in table
    assert "claim" in table
    assert "more events follow" not in table
    actions = [e["action"] for e in json.loads(run("audit", "--json"))]
    assert "device.release" in actions


def test_unclaim_and_history_pages(bench: tuple[Path, str, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    dev, device_id, _ = bench
    for _ in range(2):
        run("device", "claim", "--dir", str(dev))
        assert json.loads(run("device", "unclaim", device_id, "--json"))["event"] == "unclaim"
    result = CliRunner().invoke(cli_app, ["device", "ownership", device_id, "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert f"bastion device ownership {device_id} --offset 3" in result.output
    assert json.loads(run("device", "list", "--json")) == []


def test_claim_usage_errors(bench: tuple[Path, str, dict[str, str]], tmp_path: Path) -> None:
    dev, device_id, _ = bench
    with pytest.raises(CliError) as bare:
        run("device", "claim", device_id)
    assert bare.value.exit_code == 2
    assert "--voucher FILE" in str(bare.value.hint)
    with pytest.raises(CliError, match="exactly one of"):
        run("device", "claim")
    with pytest.raises(CliError, match="exactly one of"):
        run("device", "claim", "--dir", str(dev), "--voucher", str(tmp_path / "v"))
    with pytest.raises(CliError, match="no chip"):
        run("device", "claim", "--dir", str(tmp_path / "nothing"))
    with pytest.raises(CliError, match="cannot read"):
        run("device", "claim", "--voucher", str(tmp_path / "missing.cbor"))


def test_claim_refuses_a_device_with_an_update_on_trial(bench: tuple[Path, str, dict[str, str]]) -> None:
    """A bench boot would spend a trial attempt of an OS update: the claim says so and boots nothing."""
    from dataclasses import replace

    from bastion.hw.chip import Chip
    from bastion.hw.flash import Slot

    dev, _, _ = bench
    flash = Chip.open(dev).flash
    flash.update_boot_state(lambda state: replace(state, trial_slot=Slot.B, attempts_left=1))
    with pytest.raises(CliError, match="on trial") as refused:
        run("device", "claim", "--dir", str(dev))
    assert "bastion device run" in str(refused.value.hint)
    assert flash.read_boot_state().attempts_left == 1
