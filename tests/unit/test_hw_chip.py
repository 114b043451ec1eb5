"""The emulated chip: UDS, write-once fuses, monotonic counters, bounded atomic flash."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from bastion.hw import PARTITION_SIZES, BootState, Chip, Lifecycle, Partition, Slot
from bastion.hw.errors import (
    ChipExistsError,
    ChipNotFoundError,
    CounterRollbackError,
    FuseWriteError,
    HwError,
    PartitionEmptyError,
    PartitionSizeError,
    StateCorruptError,
)


class FixedTrng:
    def __init__(self, byte: int) -> None:
        self.byte = byte
        self.calls = 0

    def read(self, size: int) -> bytes:
        self.calls += 1
        return bytes([self.byte]) * size


@pytest.fixture
def chip(tmp_path: Path) -> Chip:
    return Chip.manufacture(tmp_path / "dev", trng=FixedTrng(7))


def test_manufacture_layout(chip: Chip) -> None:
    dev = chip.dev_dir
    assert chip.read_uds() == bytes([7]) * 32
    assert stat.S_IMODE((dev / "chip" / "uds").stat().st_mode) == 0o600
    assert (dev / "chip" / "fuses.json").is_file()
    assert json.loads((dev / "flash" / "bootstate.json").read_text()) == {
        "active_slot": None,
        "trial_slot": None,
        "attempts_left": 0,
        "last_event": None,
    }
    state = chip.fuses.read()
    assert (state.lifecycle, state.boot_key_hash, state.debug_locked, state.counters) == (
        Lifecycle.BLANK,
        None,
        False,
        {},
    )
    assert all(chip.flash.is_empty(p) for p in Partition)


def test_open_and_exists(chip: Chip, tmp_path: Path) -> None:
    assert Chip.open(chip.dev_dir).read_uds() == chip.read_uds()
    with pytest.raises(ChipNotFoundError):
        Chip.open(tmp_path / "missing")
    with pytest.raises(ChipExistsError):
        Chip.manufacture(chip.dev_dir)


def test_uds_comes_from_trng(tmp_path: Path) -> None:
    trng = FixedTrng(9)
    Chip.manufacture(tmp_path / "a", trng=trng)
    assert trng.calls == 1
    assert Chip.open(tmp_path / "a").read_uds() == bytes([9]) * 32
    assert Chip.manufacture(tmp_path / "b").read_uds() != Chip.manufacture(tmp_path / "c").read_uds()


def test_boot_key_hash_write_once(chip: Chip) -> None:
    chip.fuses.burn_boot_key_hash(b"\x01" * 32)
    with pytest.raises(FuseWriteError, match="write-once"):
        chip.fuses.burn_boot_key_hash(b"\x02" * 32)
    assert chip.fuses.boot_key_hash == b"\x01" * 32
    with pytest.raises(FuseWriteError):
        chip.fuses.burn_boot_key_hash(b"short")


def test_debug_lock_is_permanent(chip: Chip) -> None:
    assert not chip.fuses.debug_locked
    chip.fuses.lock_debug()
    chip.fuses.lock_debug()
    assert chip.fuses.debug_locked


def test_lifecycle_only_advances(chip: Chip) -> None:
    chip.fuses.advance_lifecycle(Lifecycle.SECURED)
    chip.fuses.advance_lifecycle(Lifecycle.SECURED)
    with pytest.raises(FuseWriteError, match="cannot go back"):
        chip.fuses.advance_lifecycle(Lifecycle.MANUFACTURED)
    assert chip.fuses.lifecycle is Lifecycle.SECURED


def test_counters_are_monotonic(chip: Chip) -> None:
    assert chip.fuses.counter("os") == 0
    chip.fuses.burn_counter("os", 3)
    chip.fuses.burn_counter("os", 3)  # equal: no-op
    with pytest.raises(CounterRollbackError, match="'os' is 3; refusing to burn 2"):
        chip.fuses.burn_counter("os", 2)
    chip.fuses.burn_counter("os", 5)
    chip.fuses.burn_counter("bootloader", 1)
    assert chip.fuses.counters() == {"bootloader": 1, "os": 5}
    assert Chip.open(chip.dev_dir).fuses.counter("os") == 5  # persisted


@pytest.mark.parametrize(("name", "value"), [("OS", 1), ("", 1), ("os", -1), ("os", 2**32), ("os", True)])
def test_counter_validation(chip: Chip, name: str, value: int) -> None:
    with pytest.raises(FuseWriteError):
        chip.fuses.burn_counter(name, value)


def test_counter_bank_is_bounded(chip: Chip) -> None:
    for index in range(16):
        chip.fuses.burn_counter(f"c{index}", 1)
    with pytest.raises(FuseWriteError, match="no room"):
        chip.fuses.burn_counter("one-more", 1)


def test_corrupt_fuses(chip: Chip) -> None:
    chip.fuses.path.write_text("{not json")
    with pytest.raises(StateCorruptError):
        chip.fuses.read()
    chip.fuses.path.write_text(json.dumps({"lifecycle": "secured"}))
    with pytest.raises(StateCorruptError):
        chip.fuses.read()
    chip.fuses.path.write_bytes(b" " * (64 * 1024 + 1))
    with pytest.raises(StateCorruptError, match="larger"):
        chip.fuses.read()


def test_fuse_write_leaves_no_temp_files(chip: Chip) -> None:
    chip.fuses.burn_counter("os", 1)
    assert sorted(p.name for p in chip.chip_dir.iterdir()) == ["fuses.json", "fuses.json.lock", "model.json", "uds"]


def test_flash_read_write(chip: Chip) -> None:
    chip.flash.write(Partition.CONFIG, b"abc")
    assert chip.flash.read(Partition.CONFIG) == b"abc"
    with chip.flash.open(Partition.CONFIG) as stream:
        assert stream.read() == b"abc"
    chip.flash.erase(Partition.CONFIG)
    with pytest.raises(PartitionEmptyError):
        chip.flash.read(Partition.CONFIG)


def test_flash_bounds(chip: Chip) -> None:
    size = PARTITION_SIZES[Partition.BOOTLOADER]
    with pytest.raises(PartitionSizeError):
        chip.flash.write(Partition.BOOTLOADER, b"\x00" * (size + 1))
    chip.flash.write(Partition.BOOTLOADER, b"old")
    with pytest.raises(PartitionSizeError):
        chip.flash.write_stream(Partition.BOOTLOADER, io.BytesIO(b"\x00" * (size + 1)))
    assert chip.flash.read(Partition.BOOTLOADER) == b"old"  # unchanged on failure
    assert chip.flash.write_stream(Partition.BOOTLOADER, io.BytesIO(b"x" * size)) == size
    # A file grown behind the chip's back is refused on read.
    chip.flash.path(Partition.BOOTLOADER).write_bytes(b"\x00" * (size + 1))
    with pytest.raises(PartitionSizeError):
        chip.flash.open(Partition.BOOTLOADER)


def test_open_reader_is_a_snapshot(chip: Chip) -> None:
    chip.flash.write(Partition.OS_A, b"first")
    with chip.flash.open(Partition.OS_A) as stream:
        chip.flash.write(Partition.OS_A, b"second")
        assert stream.read() == b"first"
    assert chip.flash.read(Partition.OS_A) == b"second"


def test_boot_state(chip: Chip) -> None:
    assert chip.flash.read_boot_state() == BootState()
    chip.flash.write_boot_state(BootState(active_slot=Slot.B))
    assert chip.flash.read_boot_state().active_slot is Slot.B
    assert Slot.B.flash_partition is Partition.OS_B
    assert Slot.A.other is Slot.B
    (chip.flash.flash_dir / "bootstate.json").write_text('{"active_slot": "C"}')
    with pytest.raises(StateCorruptError):
        chip.flash.read_boot_state()


def test_device_id_cert_storage_is_write_once(chip: Chip) -> None:
    with pytest.raises(StateCorruptError):
        chip.read_device_id_cert()
    chip.store_device_id_cert(b"\x30\x03der")
    assert chip.read_device_id_cert() == b"\x30\x03der"
    with pytest.raises(FuseWriteError):
        chip.store_device_id_cert(b"\x30\x03new")


def test_every_error_is_a_hw_error() -> None:
    for error in (ChipExistsError, CounterRollbackError, PartitionSizeError, StateCorruptError):
        assert issubclass(error, HwError)
