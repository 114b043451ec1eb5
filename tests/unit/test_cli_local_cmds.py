"""CLI: vendor init, os build, device manufacture / flash / info, run as the `bastion` entry point."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
from pathlib import Path

import pytest
from _cli_support import run

from bastion.boot import boot_device
from bastion.crypto.keys import generate_private_key, private_key_pem


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.setenv("COLUMNS", "200")
    code, _, err = run(monkeypatch, capsys, "vendor", "init", "--dir", str(tmp_path / "vendor"))
    assert code == 0, err
    return tmp_path


def test_full_local_flow(bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    vendor = bench / "vendor"
    for name in ("ca.key", "boot-signing.key", "os-signing.key"):
        assert stat.S_IMODE((vendor / name).stat().st_mode) == 0o600
    for name in ("ca.pem", "os-signing.pub.pem", "boot-signing.pub.pem", "bootloader.img"):
        assert (vendor / name).is_file()

    image = bench / "os.img"
    code, out, err = run(
        monkeypatch, capsys, "os", "build", "--version", "1.2.0", "--security-version", "3",
        "--key", str(vendor / "os-signing.key"), "-o", str(image), "--json",
    )  # fmt: skip
    assert code == 0, err
    built = json.loads(out)
    assert (built["version"], built["security_version"]) == ("1.2.0", 3)
    assert len(built["measurement"]) == 64
    assert "packaging" in err  # progress goes to stderr

    dev = bench / "dev"
    code, out, err = run(
        monkeypatch, capsys, "device", "manufacture", "--dir", str(dev), "--vendor", str(vendor), "--json"
    )
    assert code == 0, err
    device_id = json.loads(out)["device_id"]

    code, out, err = run(monkeypatch, capsys, "device", "flash", "--dir", str(dev), "--os", str(image), "--json")
    assert code == 0, err
    assert json.loads(out)["slot"] == "A"

    code, out, err = run(monkeypatch, capsys, "device", "info", "--dir", str(dev), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["device_id"] == device_id
    assert (info["lifecycle"], info["debug_locked"], info["active_slot"]) == ("secured", True, "A")
    assert info["slots"][0]["version"] == "1.2.0"
    assert info["slots"][0]["measurement"] == built["measurement"]
    assert info["slots"][1]["version"] is None
    assert info["recovery"] is None

    code, out, _ = run(monkeypatch, capsys, "device", "info", "--dir", str(dev))
    assert code == 0
    assert device_id[:40] in out

    result = boot_device(dev, now=dt.datetime.now(dt.UTC))
    assert (result.device_id, result.os_version) == (device_id, "1.2.0")


def test_vendor_init_refuses_overwrite(
    bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = (bench / "vendor" / "ca.pem").read_bytes()
    code, out, err = run(monkeypatch, capsys, "vendor", "init", "--dir", str(bench / "vendor"))
    assert code == 1
    assert "already holds a vendor" in err
    assert "--force" in err
    assert "Traceback" not in err + out
    assert (bench / "vendor" / "ca.pem").read_bytes() == ca
    code, _, _ = run(monkeypatch, capsys, "vendor", "init", "--dir", str(bench / "vendor"), "--force")
    assert code == 0
    assert (bench / "vendor" / "ca.pem").read_bytes() != ca


def test_manufacture_errors(bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    dev = str(bench / "dev")
    code, _, err = run(monkeypatch, capsys, "device", "manufacture", "--dir", dev, "--vendor", str(bench / "nope"))
    assert code == 1
    assert "bastion vendor init" in err
    assert run(monkeypatch, capsys, "device", "manufacture", "--dir", dev, "--vendor", str(bench / "vendor"))[0] == 0
    code, _, err = run(monkeypatch, capsys, "device", "manufacture", "--dir", dev, "--vendor", str(bench / "vendor"))
    assert code == 1
    assert "already holds a chip" in err


def test_flash_refuses_foreign_image(
    bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = str(bench / "dev")
    assert run(monkeypatch, capsys, "device", "manufacture", "--dir", dev, "--vendor", str(bench / "vendor"))[0] == 0
    rogue_key = bench / "rogue.key"
    rogue_key.write_bytes(private_key_pem(generate_private_key()))
    rogue = str(bench / "rogue.img")
    assert run(monkeypatch, capsys, "os", "build", "--version", "1.0.0", "--key", str(rogue_key), "-o", rogue)[0] == 0
    code, out, err = run(monkeypatch, capsys, "device", "flash", "--dir", dev, "--os", rogue)
    assert code == 1
    assert "not a trusted key" in err
    assert "os-signing.key" in err  # the hint
    assert "Traceback" not in out + err
    code, out, _ = run(monkeypatch, capsys, "device", "info", "--dir", dev, "--json")
    assert json.loads(out)["slots"][0]["version"] is None  # nothing written
    code, _, err = run(monkeypatch, capsys, "device", "flash", "--dir", dev, "--os", rogue, "--slot", "C")
    assert (code, "--slot A" in err) == (1, True)


def test_info_shows_recovery(bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bastion.boot.errors import NoOsError

    dev = bench / "dev"
    assert (
        run(monkeypatch, capsys, "device", "manufacture", "--dir", str(dev), "--vendor", str(bench / "vendor"))[0] == 0
    )
    with pytest.raises(NoOsError):
        boot_device(dev, now=dt.datetime.now(dt.UTC))
    code, out, _ = run(monkeypatch, capsys, "device", "info", "--dir", str(dev), "--json")
    assert code == 0
    assert json.loads(out)["recovery"]["check"] == "slot"


def test_cli_errors_without_traceback(
    bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "device", "info", "--dir", str(bench / "none"))
    assert code == 1
    assert "bastion device manufacture" in err
    key = str(bench / "vendor" / "os-signing.key")
    code, out, err = run(monkeypatch, capsys, "os", "build", "--version", "one", "--key", key, "-o", str(bench / "x"))
    assert code == 1
    assert "not a semantic version" in err
    code, out, err = run(
        monkeypatch, capsys, "os", "build", "--version", "1.0.0", "--key", str(bench / "nokey"), "-o", "x"
    )
    assert code == 1
    assert "bastion vendor init" in err
    assert "Traceback" not in out + err


def test_vendor_init_trial_options_reach_the_signed_boot_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import tarfile

    from bastion.boot.bootloader_image import read_boot_config
    from bastion.boot.config import BOOT_CONFIG_FILE, BootConfig
    from bastion.boot.vendor import load_vendor
    from bastion.images.package import ImageLimits, inspect_image

    vendor_dir = tmp_path / "vendor"
    args = ("vendor", "init", "--dir", str(vendor_dir), "--trial-timeout", "5", "--trial-boots", "2", "--json")
    code, out, _ = run(monkeypatch, capsys, *args)
    assert code == 0
    vendor = load_vendor(vendor_dir)
    # The expected fwid[0] of its devices is printed.
    assert json.loads(out)["bootloader_measurement"] == hashlib.sha256(vendor.bootloader_image).hexdigest()
    config = read_boot_config(vendor.bootloader_image, vendor.bootloader_header)
    assert (config.trial_timeout_s, config.trial_boot_limit) == (5, 2)
    # The same bytes, read straight out of the signed payload (a tar of code + boot-config.json).
    stream = io.BytesIO(vendor.bootloader_image)
    header = inspect_image(stream, limits=ImageLimits())
    with tarfile.open(fileobj=io.BytesIO(stream.read(header.payload_size))) as archive:
        member = archive.extractfile(BOOT_CONFIG_FILE)
        assert member is not None
        assert BootConfig.from_json(member.read()) == config


def test_info_shows_the_boot_state(
    bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = bench / "dev"
    assert (
        run(monkeypatch, capsys, "device", "manufacture", "--dir", str(dev), "--vendor", str(bench / "vendor"))[0] == 0
    )
    code, out, _ = run(monkeypatch, capsys, "device", "info", "--dir", str(dev), "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["active_slot"], info["trial_slot"], info["last_event"]) == (None, None, None)
