"""The development-mode CLI against a real service (uvicorn on loopback) and a real emulated device directory.

The service issues the capability; the device (off) installs it after checking it
against the tenant CA chain it stored, exactly as its OS would.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.boot.factory import manufacture_device
from bastion.boot.vendor import init_vendor, load_vendor
from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.images.capability import decode_capability
from bastion.os.state import OsState, StateDir
from bastion.service.config import Settings
from conftest import FakeClock

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def logged_in(
    tmp_path: Path, settings: Settings, live_url: str, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> str:
    # The device side of the CLI checks expiry with the real clock, and a voucher carries its real issue
    # time: the service clock is the real time when the test starts (not when the module was imported).
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


def run(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(cli_app, list(args), input=stdin, catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def claim_by_voucher(tmp_path: Path, tenant_id: str, device_id: str) -> None:
    """Claim in bulk, as a tenant claims the devices its vendor vouched for."""
    voucher = tmp_path / f"voucher-{device_id[:8]}.cbor"
    run("vendor", "voucher", "--dir", str(tmp_path / "vendor"), "--tenant", tenant_id, "--device", device_id,
        "-o", str(voucher))  # fmt: skip
    claimed = json.loads(run("device", "claim", "--voucher", str(voucher), "--json"))
    assert [d["device_id"] for d in claimed["claimed"]] == [device_id]


def test_issue_list_revoke_and_enable_development_offline(logged_in: str, tmp_path: Path) -> None:
    tenant_id = logged_in
    vendor = load_vendor(init_vendor(tmp_path / "vendor", now=NOW).root)
    dev = tmp_path / "dev"
    device_id = manufacture_device(dev, vendor, now=NOW)
    run("service", "trust-vendor", str(vendor.paths.ca_cert))
    claim_by_voucher(tmp_path, tenant_id, device_id)
    run("product", "create", "widget")
    run("device", "assign", device_id, "--group", "widget/Field Test")
    developer = tmp_path / "dev.pub.pem"
    developer.write_bytes(public_key_pem(generate_private_key().public_key()))

    out = tmp_path / "cap.cose"
    issued = json.loads(
        run("device", "capability", "issue", device_id, "--developer-key", str(developer), "-o", str(out), "--json")
    )
    assert issued["kind"] == "appDevelopment"
    assert decode_capability(out.read_bytes()).capability_id == issued["id"]
    listed = json.loads(run("device", "capability", "list", device_id, "--json"))
    assert [c["id"] for c in listed] == [issued["id"]]

    # The device has not attested yet: it cannot check the file, so it refuses it.
    with pytest.raises(CliError) as refused:
        run("device", "enable-development", "--dir", str(dev), "--file", str(out))
    assert "no tenant CA chain" in refused.value.message
    assert "attest" in str(refused.value.hint)
    # As after its first attestation: the tenant CA chain and the tenant are stored.
    state = StateDir(dev / "os-state")
    state.save_credentials(b"", run("tenant", "download-ca").encode())
    state.save_state(OsState(device_id=device_id, tenant_id=tenant_id))
    enabled = json.loads(run("device", "enable-development", "--dir", str(dev), "--file", str(out), "--json"))
    assert enabled["capability_id"] == issued["id"]
    assert state.capability_path.read_bytes() == out.read_bytes()

    # --service issues a new one for this very device and installs it.
    saved = tmp_path / "second.cose"
    enabled = json.loads(
        run(
            "device", "enable-development", "--dir", str(dev), "--service",
            "--developer-key", str(developer), "--days", "3", "--out", str(saved), "--json",
        )
    )  # fmt: skip
    assert enabled["capability_id"] != issued["id"]
    assert state.capability_path.read_bytes() == saved.read_bytes()
    assert len(json.loads(run("device", "capability", "list", device_id, "--json"))) == 2

    # A capability for another device is refused by the device, whatever the service says.
    other = tmp_path / "other"
    other_id = manufacture_device(other, vendor, now=NOW)
    claim_by_voucher(tmp_path, tenant_id, other_id)
    run("device", "capability", "issue", other_id, "--product", "widget",
        "--developer-key", str(developer), "-o", str(tmp_path / "other.cose"))  # fmt: skip
    with pytest.raises(CliError) as refused:
        run("device", "enable-development", "--dir", str(dev), "--file", str(tmp_path / "other.cose"))
    assert "wrong_device" in refused.value.message

    revoked = json.loads(run("device", "capability", "revoke", device_id, issued["id"], "--json"))
    assert revoked["revoked_at"] is not None
    assert json.loads(run("device", "disable-development", "--dir", str(dev), "--json")) == {"removed": True}
    assert not state.capability_path.exists()
    actions = run("audit", "--limit", "20")
    assert "capability.issue" in actions
    assert "capability.revoke" in actions


def test_enable_development_needs_one_source(logged_in: str, tmp_path: Path) -> None:
    del logged_in
    with pytest.raises(CliError) as refused:
        run("device", "enable-development", "--dir", str(tmp_path))
    assert "exactly one of --file" in refused.value.message
