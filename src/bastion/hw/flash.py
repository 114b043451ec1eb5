"""Flash partitions and the boot state, one file per partition.

``DEV/flash/<partition>.bin`` holds a partition's content; a missing file is an
erased (empty) partition. ``DEV/flash/bootstate.json`` records the active OS slot.
Every write replaces the file atomically, so a reader that holds a partition
open keeps a consistent snapshot even if the partition is rewritten meanwhile.

Example:
    >>> import tempfile, pathlib, io
    >>> flash = Flash.create(pathlib.Path(tempfile.mkdtemp()))
    >>> flash.write(Partition.CONFIG, b"hello")
    >>> flash.read(Partition.CONFIG)
    b'hello'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bastion.hw._statefile import locked, read_json, write_json
from bastion.hw.atomic import atomic_writer, copy_stream
from bastion.hw.errors import PartitionEmptyError, PartitionSizeError, StateCorruptError

__all__ = ["PARTITION_SIZES", "BootState", "Flash", "Partition", "Slot"]

_MIB = 1024 * 1024


class Partition(enum.StrEnum):
    """The flash partitions of the chip."""

    BOOTLOADER = "bootloader"
    OS_A = "os_a"
    OS_B = "os_b"
    APPS = "apps"
    CONFIG = "config"
    STORAGE = "storage"


#: Capacity of each partition in bytes; a write that does not fit is refused.
PARTITION_SIZES: dict[Partition, int] = {
    Partition.BOOTLOADER: 1 * _MIB,
    Partition.OS_A: 64 * _MIB,
    Partition.OS_B: 64 * _MIB,
    Partition.APPS: 64 * _MIB,
    Partition.CONFIG: 1 * _MIB,
    Partition.STORAGE: 16 * _MIB,
}


class Slot(enum.StrEnum):
    """An A/B OS slot."""

    A = "A"
    B = "B"

    @property
    def flash_partition(self) -> Partition:
        """The flash partition that holds this slot."""
        return Partition.OS_A if self is Slot.A else Partition.OS_B

    @property
    def other(self) -> Slot:
        """The other slot."""
        return Slot.B if self is Slot.A else Slot.A


@dataclass(frozen=True)
class BootState:
    """Which OS slot the bootloader boots. ``active_slot`` is None until one is flashed."""

    active_slot: Slot | None = None


class Flash:
    """The flash of one chip: partitions under ``flash_dir``."""

    def __init__(self, flash_dir: Path) -> None:
        """Open the flash stored in ``flash_dir``."""
        self.flash_dir = flash_dir

    @classmethod
    def create(cls, flash_dir: Path) -> Flash:
        """Create an erased flash (every partition empty, no active slot)."""
        flash_dir.mkdir(parents=True, exist_ok=True)
        flash = cls(flash_dir)
        flash.write_boot_state(BootState())
        return flash

    def path(self, partition: Partition) -> Path:
        """Return the file that backs ``partition``."""
        return self.flash_dir / f"{Partition(partition).value}.bin"

    def is_empty(self, partition: Partition) -> bool:
        """Return whether ``partition`` holds no data."""
        path = self.path(partition)
        return not path.exists() or path.stat().st_size == 0

    def open(self, partition: Partition) -> BinaryIO:
        """Open ``partition`` for streamed reading (the caller closes it).

        Raises:
            PartitionEmptyError: the partition holds nothing.
            PartitionSizeError: the backing file is larger than the partition.
        """
        try:
            handle = self.path(partition).open("rb")
        except FileNotFoundError as exc:
            raise PartitionEmptyError(f"partition {partition.value} is empty") from exc
        size = handle.seek(0, 2)
        handle.seek(0)
        if size == 0:
            handle.close()
            raise PartitionEmptyError(f"partition {partition.value} is empty")
        if size > PARTITION_SIZES[partition]:
            handle.close()
            raise PartitionSizeError(f"partition {partition.value} holds more than its capacity")
        return handle

    def read(self, partition: Partition) -> bytes:
        """Read the whole of ``partition`` (bounded by its capacity)."""
        with self.open(partition) as handle:
            return handle.read(PARTITION_SIZES[partition])

    def write(self, partition: Partition, data: bytes) -> None:
        """Replace the content of ``partition`` atomically.

        Raises:
            PartitionSizeError: ``data`` is larger than the partition.
        """
        capacity = PARTITION_SIZES[partition]
        if len(data) > capacity:
            raise PartitionSizeError(f"{len(data)} bytes do not fit in {partition.value} ({capacity} bytes)")
        with atomic_writer(self.path(partition)) as handle:
            handle.write(data)

    def write_stream(self, partition: Partition, source: BinaryIO) -> int:
        """Replace ``partition`` with everything ``source`` yields, streamed and bounded.

        Returns:
            The number of bytes written.

        Raises:
            PartitionSizeError: ``source`` yields more than the partition holds;
                the partition is unchanged.
        """
        capacity = PARTITION_SIZES[partition]
        with atomic_writer(self.path(partition)) as handle:
            written = copy_stream(source, handle, limit=capacity)
            if written < 0:
                raise PartitionSizeError(f"data does not fit in {partition.value} ({capacity} bytes)")
        return written

    def erase(self, partition: Partition) -> None:
        """Erase ``partition``."""
        self.path(partition).unlink(missing_ok=True)

    @property
    def _boot_state_path(self) -> Path:
        return self.flash_dir / "bootstate.json"

    def read_boot_state(self) -> BootState:
        """Return the boot state.

        Raises:
            StateCorruptError: ``bootstate.json`` is missing or malformed.
        """
        value = read_json(self._boot_state_path)
        raw = value.get("active_slot")
        try:
            return BootState(active_slot=None if raw is None else Slot(raw))
        except ValueError as exc:
            raise StateCorruptError("bootstate.json names an unknown slot") from exc

    def write_boot_state(self, state: BootState) -> None:
        """Replace the boot state atomically."""
        with locked(self._boot_state_path):
            slot = None if state.active_slot is None else state.active_slot.value
            write_json(self._boot_state_path, {"active_slot": slot})
