"""Flash partitions and the boot state, one file per partition.

``DEV/flash/<partition>.bin`` holds a partition's content; a missing file is an
erased (empty) partition. Every write replaces the file atomically, so a reader
that holds a partition open keeps a consistent snapshot even if the partition
is rewritten meanwhile.

``DEV/flash/bootstate.json`` is the A/B state the bootloader follows (written
atomically, read-modify-write under a lock)::

    {"active_slot": "A", "trial_slot": null | "B", "attempts_left": 0,
     "last_event": null | {"kind": "rollback", "from_version": "1.1.0",
                           "to_version": "1.0.0", "at": 1767225600}}

A file from before the A/B fields existed (only ``active_slot``) reads as no
trial and no event.

Example:
    >>> import tempfile, pathlib, io
    >>> flash = Flash.create(pathlib.Path(tempfile.mkdtemp()))
    >>> flash.write(Partition.CONFIG, b"hello")
    >>> flash.read(Partition.CONFIG)
    b'hello'
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bastion.hw._statefile import locked, read_json, write_json
from bastion.hw.atomic import atomic_writer, copy_stream
from bastion.hw.errors import FlashError, PartitionEmptyError, PartitionSizeError, StateCorruptError

__all__ = [
    "EVENT_ROLLBACK",
    "MAX_EVENT_FIELD_CHARS",
    "MAX_TRIAL_ATTEMPTS",
    "OUTCOMES",
    "OUTCOME_FAILED",
    "OUTCOME_INTERRUPTED",
    "PARTITION_SIZES",
    "BootEvent",
    "BootState",
    "Flash",
    "Partition",
    "Slot",
]

_MIB = 1024 * 1024
#: Bound on ``attempts_left`` (the boot configuration's trial limit is lower still).
MAX_TRIAL_ATTEMPTS = 16
#: Bound on each text field of the recorded boot event.
MAX_EVENT_FIELD_CHARS = 64
#: The only boot event kind: the bootloader returned from a trial slot to the active one.
EVENT_ROLLBACK = "rollback"
#: A rollback's outcome: the trial OS ran and failed its health check (or did not verify) ...
OUTCOME_FAILED = "failed"
#: ... or its attempts ran out with no verdict (a power cut, a crash of the whole device).
OUTCOME_INTERRUPTED = "interrupted"
OUTCOMES = frozenset({OUTCOME_FAILED, OUTCOME_INTERRUPTED})
_MAX_EVENT_TIME = 1 << 40


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
class BootEvent:
    """Something the boot chain did on its own that the OS must report (a rollback).

    Attributes:
        kind: :data:`EVENT_ROLLBACK`.
        from_version: the version of the trial OS that was abandoned.
        to_version: the version of the active OS booted instead.
        at: when, in seconds since the epoch.
        outcome: :data:`OUTCOME_FAILED` (the trial ran to a failed verdict, or did not
            verify) or :data:`OUTCOME_INTERRUPTED` (no verdict: its attempts ran out).
            An event written before outcomes existed reads as failed (the old meaning).
    """

    kind: str
    from_version: str
    to_version: str
    at: int
    outcome: str = OUTCOME_FAILED

    def to_json(self) -> dict[str, object]:
        """Return the JSON form."""
        return {
            "kind": self.kind,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "at": self.at,
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, value: object) -> BootEvent:
        """Parse the JSON form strictly.

        Raises:
            StateCorruptError: wrong fields, types or bounds.
        """
        base = {"kind", "from_version", "to_version", "at"}
        if not isinstance(value, dict) or set(value) not in (base, base | {"outcome"}):
            raise StateCorruptError("bootstate.json: last_event has the wrong fields")
        outcome = value.get("outcome", OUTCOME_FAILED)
        if outcome not in OUTCOMES:
            raise StateCorruptError("bootstate.json: last_event outcome is invalid")
        texts = (value["kind"], value["from_version"], value["to_version"])
        if not all(isinstance(t, str) and len(t) <= MAX_EVENT_FIELD_CHARS for t in texts):
            raise StateCorruptError("bootstate.json: last_event text fields are invalid")
        at = value["at"]
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < _MAX_EVENT_TIME:
            raise StateCorruptError("bootstate.json: last_event time is invalid")
        return cls(value["kind"], value["from_version"], value["to_version"], at, outcome)


def _slot_or_none(value: object, name: str) -> Slot | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateCorruptError(f"bootstate.json: {name} is not a slot name")
    try:
        return Slot(value)
    except ValueError as exc:
        raise StateCorruptError("bootstate.json names an unknown slot") from exc


@dataclass(frozen=True)
class BootState:
    """The A/B boot state.

    Attributes:
        active_slot: the confirmed OS slot; None until one is flashed.
        trial_slot: a slot to try once before returning to ``active_slot``, or None.
        attempts_left: trial boots left; the bootloader decrements it (durably)
            before each trial boot and rolls back when it is 0.
        last_event: a rollback the OS has not acknowledged yet, or None.
    """

    active_slot: Slot | None = None
    trial_slot: Slot | None = None
    attempts_left: int = 0
    last_event: BootEvent | None = None

    def to_json(self) -> dict[str, object]:
        """Return the JSON form stored in ``bootstate.json``."""
        return {
            "active_slot": None if self.active_slot is None else self.active_slot.value,
            "trial_slot": None if self.trial_slot is None else self.trial_slot.value,
            "attempts_left": self.attempts_left,
            "last_event": None if self.last_event is None else self.last_event.to_json(),
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> BootState:
        """Parse the JSON form strictly (the A/B fields may be absent in an old file).

        Raises:
            StateCorruptError: an unknown field, a bad slot, attempts out of
                range, or a trial on the active slot.
        """
        if not set(value) <= {"active_slot", "trial_slot", "attempts_left", "last_event"}:
            raise StateCorruptError("bootstate.json has unknown fields")
        active = _slot_or_none(value.get("active_slot"), "active_slot")
        trial = _slot_or_none(value.get("trial_slot"), "trial_slot")
        attempts = value.get("attempts_left", 0)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 <= attempts <= MAX_TRIAL_ATTEMPTS:
            raise StateCorruptError(f"bootstate.json: attempts_left must be 0..{MAX_TRIAL_ATTEMPTS}")
        if trial is not None and (active is None or trial is active):
            raise StateCorruptError("bootstate.json: a trial slot needs another, active slot")
        raw_event = value.get("last_event")
        event = None if raw_event is None else BootEvent.from_json(raw_event)
        return cls(active, trial, attempts, event)


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
        return BootState.from_json(read_json(self._boot_state_path))

    def write_boot_state(self, state: BootState) -> None:
        """Replace the boot state atomically."""
        with locked(self._boot_state_path):
            write_json(self._boot_state_path, state.to_json())

    def update_boot_state(self, change: Callable[[BootState], BootState]) -> BootState:
        """Read, change and write the boot state under the lock; return the new state.

        ``change`` may raise to abandon the update (the state is then unchanged).

        Raises:
            StateCorruptError: ``bootstate.json`` is missing or malformed.
        """
        with locked(self._boot_state_path):
            old = BootState.from_json(read_json(self._boot_state_path))
            new = change(old)
            if new != old:  # no write (and no flash wear) when nothing changes
                write_json(self._boot_state_path, new.to_json())
            return new

    def remove_stale_writes(self, partition: Partition) -> int:
        """Delete temp files a power cut left behind while ``partition`` was being written.

        Returns:
            How many were removed.
        """
        removed = 0
        for stale in self.flash_dir.glob(f".{self.path(partition).name}.*.tmp"):
            try:
                stale.unlink()
            except OSError as exc:
                raise FlashError(f"cannot remove a stale write of {partition.value}") from exc
            removed += 1
        return removed
