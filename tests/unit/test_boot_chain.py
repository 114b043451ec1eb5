"""The boot chain: good boots, DICE determinism, and every attack failing closed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from _boot_world import NOW, World, copy_device, make_world, patched_sources, vendor_bootloader, write_bootloader

from bastion.boot import boot_device
from bastion.boot.errors import (
    BootError,
    BootloaderVerificationError,
    BootStageError,
    ChipNotReadyError,
    NoOsError,
    OsVerificationError,
    RollbackError,
)
from bastion.boot.factory import flash_os, manufacture_device
from bastion.boot.recovery import read_recovery
from bastion.boot.result import BootResult
from bastion.boot.vendor import init_vendor, load_vendor
from bastion.crypto import certs
from bastion.crypto.eat import DebugStatus
from bastion.crypto.keys import generate_private_key, public_key_bytes
from bastion.hw.chip import Chip
from bastion.hw.flash import BootState, Partition, Slot
from bastion.images.os_build import build_os_image
from bastion.images.package import measure_image


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def golden(world: World) -> Path:
    return world.device("golden")


@pytest.fixture
def dev(golden: Path, tmp_path: Path) -> Path:
    return copy_device(golden, tmp_path / "dev")


def test_good_boot(world: World, dev: Path) -> None:
    result = boot_device(dev, now=NOW)
    assert result.boot_slot == "A"
    assert (result.os_version, result.os_security_version) == ("1.0.0", 1)
    assert result.secboot is True
    assert result.dbgstat is DebugStatus.DISABLED_PERMANENTLY
    assert [m.component for m in result.measurements] == ["bootloader", "os"]
    assert result.measurements[1].digest == measure_image(world.os_v1)
    assert (result.os_runtime_dir / "bastion" / "os" / "__init__.py").is_file()
    assert result.os_runtime_dir.name == f"os-{result.measurements[1].digest.hex()[:16]}"

    alias = certs.load_certificate_der(result.cert_chain[0])
    device_id_cert = certs.load_certificate_der(result.cert_chain[1])
    assert certs.verify_chain([alias, device_id_cert], [world.vendor.ca_cert], now=NOW) == world.vendor.ca_cert
    assert public_key_bytes(alias.public_key()) == public_key_bytes(result.alias_key.public_key())  # type: ignore[arg-type]
    tcb = certs.tcb_info_from_cert(alias)
    assert [f.digest for f in tcb.fwids] == [m.digest for m in result.measurements]
    assert (tcb.version, tcb.svn) == ("1.0.0", 1)
    assert read_recovery(dev) is None


def test_boot_result_carries_no_boot_secrets(dev: Path) -> None:
    result = boot_device(dev, now=NOW)
    uds = Chip.open(dev).read_uds()
    names = {f.name for f in dataclasses.fields(result)}
    assert not names & {"uds", "cdi", "cdi_bl", "cdi_os", "device_id_key"}
    assert uds.hex() not in repr(result)
    assert uds not in b"".join(result.cert_chain)


def test_alias_key_is_deterministic_and_follows_firmware(world: World, dev: Path) -> None:
    first = boot_device(dev, now=NOW)
    runtime_inode = (first.os_runtime_dir / "bastion" / "__init__.py").stat().st_ino
    second = boot_device(dev, now=NOW)
    same = public_key_bytes(first.alias_key.public_key())
    assert public_key_bytes(second.alias_key.public_key()) == same
    assert second.cert_chain == first.cert_chain
    # The intact runtime is reused, not unpacked again.
    assert (second.os_runtime_dir / "bastion" / "__init__.py").stat().st_ino == runtime_inode

    flash_os(dev, world.os_v2)
    upgraded = boot_device(dev, now=NOW)
    assert upgraded.os_version == "2.0.0"
    assert public_key_bytes(upgraded.alias_key.public_key()) != same
    assert upgraded.device_id == first.device_id


def test_tampered_runtime_is_unpacked_again(dev: Path) -> None:
    result = boot_device(dev, now=NOW)
    entry = result.os_runtime_dir / "bastion" / "os" / "__init__.py"
    original = entry.read_bytes()
    entry.write_text("raise SystemExit('owned')\n")
    boot_device(dev, now=NOW)
    assert entry.read_bytes() == original


def _recovery(dev: Path) -> dict[str, str]:
    value: dict[str, str] = json.loads((dev / "recovery.json").read_text())
    return value


def test_tampered_bootloader(dev: Path) -> None:
    flash = Chip.open(dev).flash
    data = bytearray(flash.read(Partition.BOOTLOADER))
    data[-5] ^= 0x01  # inside the boot configuration payload
    flash.write(Partition.BOOTLOADER, bytes(data))
    with pytest.raises(BootloaderVerificationError) as info:
        boot_device(dev, now=NOW)
    assert info.value.stage == "rom"
    record = _recovery(dev)
    assert (record["stage"], record["check"]) == ("rom", "image")
    assert record["time"] == NOW.isoformat()


def test_bootloader_from_another_vendor(dev: Path, tmp_path: Path) -> None:
    other = load_vendor(init_vendor(tmp_path / "other-vendor", now=NOW).root)
    from bastion.boot.config import encode_bootloader_partition

    Chip.open(dev).flash.write(
        Partition.BOOTLOADER, encode_bootloader_partition(other.boot_public_key, other.bootloader_image)
    )
    with pytest.raises(BootloaderVerificationError, match="does not match the fused boot key"):
        boot_device(dev, now=NOW)
    assert _recovery(dev)["check"] == "boot key"


def test_one_byte_changed_in_os_image(dev: Path) -> None:
    flash = Chip.open(dev).flash
    data = bytearray(flash.read(Partition.OS_A))
    data[len(data) // 2] ^= 0x01
    flash.write(Partition.OS_A, bytes(data))
    with pytest.raises(OsVerificationError) as info:
        boot_device(dev, now=NOW)
    assert (info.value.stage, info.value.check) == ("bootloader", "payload")
    assert _recovery(dev)["check"] == "payload"


def test_os_header_changed(dev: Path) -> None:
    flash = Chip.open(dev).flash
    data = flash.read(Partition.OS_A)
    index = data.index(b"1.0.0")
    flash.write(Partition.OS_A, data[:index] + b"9.0.0" + data[index + 5 :])
    with pytest.raises(OsVerificationError, match="not signed by a pinned OS-publisher key"):
        boot_device(dev, now=NOW)


def test_os_signed_by_another_key(dev: Path, tmp_path: Path) -> None:
    rogue = build_os_image(tmp_path / "rogue.img", "1.0.0", 1, generate_private_key())
    Chip.open(dev).flash.write(Partition.OS_A, rogue.path.read_bytes())
    with pytest.raises(OsVerificationError, match="not signed by a pinned OS-publisher key") as info:
        boot_device(dev, now=NOW)
    assert info.value.check == "signature"


def test_os_below_rollback_counter(dev: Path) -> None:
    Chip.open(dev).fuses.burn_counter("os", 2)
    with pytest.raises(RollbackError, match="OS security version 1 is below the anti-rollback counter 2"):
        boot_device(dev, now=NOW)
    assert _recovery(dev)["check"] == "rollback"


def test_empty_slot(dev: Path) -> None:
    Chip.open(dev).flash.erase(Partition.OS_A)
    with pytest.raises(NoOsError, match=r"slot A is empty: flash an OS with `bastion device flash`"):
        boot_device(dev, now=NOW)
    Chip.open(dev).flash.write_boot_state(BootState(active_slot=None))
    with pytest.raises(NoOsError, match="no OS slot is active"):
        boot_device(dev, now=NOW)


def test_good_boot_clears_recovery(world: World, dev: Path) -> None:
    flash = Chip.open(dev).flash
    good = flash.read(Partition.OS_A)
    flash.erase(Partition.OS_A)
    with pytest.raises(BootError):
        boot_device(dev, now=NOW)
    assert read_recovery(dev) is not None
    flash.write(Partition.OS_A, good)
    boot_device(dev, now=NOW)
    assert read_recovery(dev) is None
    assert not (dev / "recovery.json").exists()


def test_no_chip(tmp_path: Path) -> None:
    with pytest.raises(ChipNotReadyError, match="manufacture one"):
        boot_device(tmp_path / "nothing", now=NOW)
    assert not (tmp_path / "nothing").exists()


def test_unsecured_chip_does_not_boot(tmp_path: Path) -> None:
    Chip.manufacture(tmp_path / "blank")
    with pytest.raises(ChipNotReadyError, match="not secured") as info:
        boot_device(tmp_path / "blank", now=NOW)
    assert info.value.check == "lifecycle"
    assert read_recovery(tmp_path / "blank") is not None


def test_device_id_cert_of_another_chip(world: World, dev: Path, tmp_path: Path) -> None:
    other = world.device("other-chip")
    (dev / "chip" / "device_id_cert.der").write_bytes((other / "chip" / "device_id_cert.der").read_bytes())
    with pytest.raises(ChipNotReadyError, match="not for this chip"):
        boot_device(dev, now=NOW)


def test_boot_from_slot_b(world: World, dev: Path) -> None:
    outcome = flash_os(dev, world.os_v2, slot=Slot.B)
    assert not outcome.activated
    assert boot_device(dev, now=NOW).boot_slot == "A"
    flash_os(dev, world.os_v2, slot=Slot.B, activate=True)
    result = boot_device(dev, now=NOW)
    assert (result.boot_slot, result.os_version) == ("B", "2.0.0")


def test_manufacture_twice_refused(world: World, golden: Path) -> None:
    from bastion.boot.errors import ManufactureError

    with pytest.raises(ManufactureError, match="already holds a chip"):
        manufacture_device(golden, world.vendor, now=NOW)


def test_vendor_root_outlives_device_id_certificates(world: World, dev: Path) -> None:
    device_id_cert = certs.load_certificate_der(Chip.open(dev).read_device_id_cert())
    assert world.vendor.ca_cert.not_valid_after_utc > device_id_cert.not_valid_after_utc
    # A device must still chain to its vendor in its 20th year.
    certs.verify_chain([device_id_cert], [world.vendor.ca_cert], now=NOW.replace(year=NOW.year + 20))


# --- The bootloader stage and the monitor are measured code (issue 6) ---------------------------


def _alias_public(result: BootResult) -> bytes:
    return public_key_bytes(result.alias_key.public_key())


def test_changing_the_monitor_code_changes_the_identity(world: World, dev: Path, tmp_path: Path) -> None:
    good = boot_device(dev, now=NOW)
    assert good.bootloader_runtime_dir.name == f"bl-{good.measurements[0].digest.hex()[:16]}"
    assert good.bootloader_runtime_dir.parent == good.os_runtime_dir.parent
    # Two bootloader images that differ only in one comment of the monitor's code.
    tree = patched_sources(tmp_path, {"monitor/server.py": ('"""The monitor', '"""(patched) The monitor')})
    other_dev = copy_device(dev, tmp_path / "other")
    write_bootloader(other_dev, vendor_bootloader(world.vendor, tree))
    other = boot_device(other_dev, now=NOW)

    assert other.device_id == good.device_id  # DeviceID: the UDS only
    assert other.cert_chain[1] == good.cert_chain[1]
    assert other.measurements[0].digest != good.measurements[0].digest  # CDI_BL follows the bootloader
    assert other.measurements[1] == good.measurements[1]  # same OS
    assert _alias_public(other) != _alias_public(good)
    fwids = [certs.tcb_info_from_cert(certs.load_certificate_der(r.cert_chain[0])).fwids for r in (good, other)]
    assert fwids[0][0].digest == good.measurements[0].digest
    assert fwids[1][0].digest == other.measurements[0].digest
    assert fwids[0][1] == fwids[1][1]
    # The monitor would run the patched code: it is what the ROM unpacked and measured.
    server = other.bootloader_runtime_dir / "bastion" / "monitor" / "server.py"
    assert server.read_text().startswith('"""(patched) The monitor')


def test_the_bootloader_of_the_host_package_is_reproducible(world: World, dev: Path) -> None:
    # A host rebuilds the vendor's bootloader from the same sources and key: the same measurement.
    rebuilt = vendor_bootloader(world.vendor)
    assert rebuilt == Chip.open(dev).flash.read(Partition.BOOTLOADER)


def test_a_tampered_bootloader_tree_does_not_run(dev: Path) -> None:
    first = boot_device(dev, now=NOW)
    server = first.bootloader_runtime_dir / "bastion" / "monitor" / "server.py"
    stage = first.bootloader_runtime_dir / "bastion" / "boot" / "bootloader.py"
    originals = {path: path.read_bytes() for path in (server, stage)}
    server.write_text("raise SystemExit('owned')\n")
    stage.write_text("raise SystemExit('owned')\n")  # would fail the boot if it ran
    second = boot_device(dev, now=NOW)
    assert {path: path.read_bytes() for path in originals} == originals
    assert _alias_public(second) == _alias_public(first)


def test_a_planted_bytecode_cache_is_removed_before_the_stage_runs(dev: Path) -> None:
    first = boot_device(dev, now=NOW)
    cache = first.bootloader_runtime_dir / "bastion" / "boot" / "__pycache__"
    cache.mkdir()
    (cache / "bootloader.cpython-311.pyc").write_bytes(b"owned")
    boot_device(dev, now=NOW)
    assert not cache.exists()


def test_a_stage_that_crashes_leaves_the_chip_in_recovery(world: World, dev: Path, tmp_path: Path) -> None:
    marker = "def run_bootloader(chip: Chip, rom: RomOutput, *, now: dt.datetime) -> BootResult:\n"
    tree = patched_sources(tmp_path, {"boot/bootloader.py": (marker, marker + "    __import__('os')._exit(7)\n")})
    write_bootloader(dev, vendor_bootloader(world.vendor, tree))
    with pytest.raises(BootStageError, match="exited with status 7 without an answer") as info:
        boot_device(dev, now=NOW)
    assert (info.value.stage, info.value.check) == ("bootloader", "stage")
    record = _recovery(dev)
    assert (record["stage"], record["check"]) == ("bootloader", "stage")


def test_a_stage_that_hangs_is_stopped_at_its_bound(
    world: World, dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.boot import chain

    marker = "def run_bootloader(chip: Chip, rom: RomOutput, *, now: dt.datetime) -> BootResult:\n"
    tree = patched_sources(tmp_path, {"boot/bootloader.py": (marker, marker + "    __import__('time').sleep(600)\n")})
    write_bootloader(dev, vendor_bootloader(world.vendor, tree))
    monkeypatch.setattr(chain, "STAGE_TIMEOUT_S", 2.0)
    with pytest.raises(BootStageError, match="did not answer within 2 s"):
        boot_device(dev, now=NOW)
    assert _recovery(dev)["check"] == "timeout"


def test_the_stage_gets_no_secret_in_argv_or_env(world: World, dev: Path, tmp_path: Path) -> None:
    from bastion.crypto.dice import derive_cdi

    probe = dev / "stage-probe"
    marker = "def run_bootloader(chip: Chip, rom: RomOutput, *, now: dt.datetime) -> BootResult:\n"
    dump = (
        f"    __import__('pathlib').Path({str(probe)!r}).write_bytes("
        "open('/proc/self/cmdline', 'rb').read() + b'\\n' + open('/proc/self/environ', 'rb').read())\n"
    )
    tree = patched_sources(tmp_path, {"boot/bootloader.py": (marker, marker + dump)})
    write_bootloader(dev, vendor_bootloader(world.vendor, tree))
    result = boot_device(dev, now=NOW)
    seen = probe.read_bytes()
    uds = Chip.open(dev).read_uds()
    cdi_bl = derive_cdi(uds, result.measurements[0].digest)
    for secret in (uds, cdi_bl):
        assert secret not in seen
        assert secret.hex().encode() not in seen
    assert b"PRIVATE KEY" not in seen
    assert f"PYTHONPATH={result.bootloader_runtime_dir}".encode() in seen.split(b"\0")
    assert b"-m\0bastion.boot\0--input-fd" in seen


def test_a_device_with_a_legacy_bootloader_names_reprovisioning(world: World, dev: Path) -> None:
    import io

    from bastion.boot.bootloader_image import read_boot_config
    from bastion.boot.config import BOOTLOADER_COMPONENT_ID, BOOTLOADER_LIMITS, encode_bootloader_partition
    from bastion.crypto.keys import load_private_key_pem
    from bastion.images.package import ImageType, build_image

    config = read_boot_config(world.vendor.bootloader_image, world.vendor.bootloader_header)
    old = io.BytesIO()
    build_image(
        old,
        io.BytesIO(config.to_json()),  # the format before issue 6: the bare boot configuration
        image_type=ImageType.BOOTLOADER,
        component_id=BOOTLOADER_COMPONENT_ID,
        version="1.0.0",
        security_version=1,
        key=load_private_key_pem(world.vendor.paths.boot_key.read_bytes()),
        limits=BOOTLOADER_LIMITS,
    )
    write_bootloader(dev, encode_bootloader_partition(world.vendor.boot_public_key, old.getvalue()))
    with pytest.raises(BootloaderVerificationError, match="re-provision") as info:
        boot_device(dev, now=NOW)
    assert info.value.check == "format"
    assert "`bastion device manufacture" in str(info.value)
    assert _recovery(dev)["check"] == "format"


def test_a_vendor_with_a_legacy_bootloader_names_reprovisioning(world: World, tmp_path: Path) -> None:
    import io
    import shutil

    from bastion.boot.bootloader_image import read_boot_config
    from bastion.boot.config import BOOTLOADER_COMPONENT_ID, BOOTLOADER_LIMITS
    from bastion.boot.errors import VendorError
    from bastion.crypto.keys import load_private_key_pem
    from bastion.images.package import ImageType, build_image

    root = Path(shutil.copytree(world.vendor.paths.root, tmp_path / "vendor"))
    config = read_boot_config(world.vendor.bootloader_image, world.vendor.bootloader_header)
    old = io.BytesIO()
    build_image(
        old,
        io.BytesIO(config.to_json()),
        image_type=ImageType.BOOTLOADER,
        component_id=BOOTLOADER_COMPONENT_ID,
        version="1.0.0",
        security_version=1,
        key=load_private_key_pem((root / "boot-signing.key").read_bytes()),
        limits=BOOTLOADER_LIMITS,
    )
    (root / "bootloader.img").write_bytes(old.getvalue())
    with pytest.raises(VendorError, match="re-provision: `bastion vendor init --force"):
        load_vendor(root)


def test_the_os_reads_its_pinned_keys_out_of_the_bootloader_archive(world: World, dev: Path) -> None:
    from bastion.os.updates.os_update import pinned_os_keys

    keys = pinned_os_keys(dev / "flash" / "bootloader.bin")  # the partition file, as the OS is given it
    assert [public_key_bytes(k) for k in keys] == [public_key_bytes(world.os_key.public_key())]
