"""The device's persistent, bounded, coalescing queue of failure records (docs/error-reports.md, "Device side").

One JSON file in the device's flash state, rewritten atomically (temp file,
fsync, rename) at every change, so a ``kill -9`` or a power cut at any point
leaves either the state before the change or the state after it.

- **Coalescing.** The same event repeating is one *open* record with a count,
  a first and a last time (Azure Sphere's error reports do the same).
- **Sealing.** :meth:`ReportQueue.seal` moves the open records into one sealed
  batch with a fresh random ``batch_id``, persisted before anything is sent.
  Later repeats go into new open records, so a sealed record never changes.
- **Exactly once.** A sealed batch is sent again, unchanged and with the same
  ``batch_id``, until the service acknowledges it (:meth:`ReportQueue.ack`);
  the service counts a ``batch_id`` once. So no acknowledged event is lost, and
  none is counted twice, whenever the device is cut.
- **Bounded.** At most ``max_records`` open records: when full, the oldest
  open record goes and ``dropped`` counts it; the next sealed batch carries the
  count to the service.

Example:
    >>> import pathlib, tempfile
    >>> from bastion.crypto.error_report import ErrorRecord
    >>> q = ReportQueue(pathlib.Path(tempfile.mkdtemp()) / "error-reports.json")
    >>> r = ErrorRecord("AppExit", "Warning", "exit_code", "app", "1.0.0", 1, 5, 5, "exit code 3", exit_code=3)
    >>> q.add(r); q.add(r)
    >>> [x.count for x in q.open_records()]
    [2]
    >>> batch = q.seal(iat=9)
    >>> q.ack(batch.batch_id); len(q.open_records()), q.sealed() is None
    (0, True)
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.crypto.error_report import MAX_COUNT, MAX_RECORDS, ErrorRecord, record_from_map, record_to_map
from bastion.crypto.errors import MalformedInput
from bastion.hw.atomic import atomic_write_bytes

__all__ = ["MAX_QUEUE_FILE_BYTES", "QUEUE_FILE", "ReportQueue", "SealedBatch", "coalesce_key"]

QUEUE_FILE = "error-reports.json"
#: Bound on the queue file read back (128 open + 128 sealed records of at most ~3 KiB each).
MAX_QUEUE_FILE_BYTES = 1024 * 1024
_FORMAT = 1


def coalesce_key(record: ErrorRecord) -> tuple[Any, ...]:
    """What makes two records "the same event" (counts, times, texts and uptime aside)."""
    return (
        record.category,
        record.event_class,
        record.event_type,
        record.component_id,
        record.version,
        record.exit_code,
        record.signal,
        record.exception,
        record.frames,
        record.capability,
        record.reason,
    )


@dataclass(frozen=True)
class SealedBatch:
    """A batch waiting for the service's acknowledgement."""

    batch_id: str
    iat: int
    dropped: int
    records: tuple[ErrorRecord, ...]


class ReportQueue:
    """The queue file of one device; thread-safe.

    Args:
        path: the queue file (``DEV/os-state/error-reports.json``).
        max_records: bound on the open records (and so on a batch).
    """

    def __init__(self, path: Path, *, max_records: int = MAX_RECORDS) -> None:
        self._path = path
        self._max = min(max_records, MAX_RECORDS)
        self._lock = threading.Lock()
        self._open: list[ErrorRecord] = []
        self._sealed: SealedBatch | None = None
        self.dropped = 0
        #: Highest time of an event imported from another process's queue (see :meth:`mark_imported`).
        self.imported_until = 0
        self._load()

    # -- file ---------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with self._path.open("rb") as handle:
                data = handle.read(MAX_QUEUE_FILE_BYTES + 1)
            value = json.loads(data) if len(data) <= MAX_QUEUE_FILE_BYTES else None
        except (OSError, ValueError, RecursionError):
            return  # no file yet, or one a bad flash block broke: start empty
        if not isinstance(value, dict) or value.get("v") != _FORMAT:
            return
        self._open = _records(value.get("open"))[-self._max :]
        self.dropped = _count(value.get("dropped"))
        self.imported_until = _count(value.get("imported_until"))
        sealed = value.get("sealed")
        if isinstance(sealed, dict):
            batch_id, iat = sealed.get("batch_id"), sealed.get("iat")
            records = _records(sealed.get("records"))
            if isinstance(batch_id, str) and len(batch_id) == 32 and type(iat) is int and iat >= 0:
                self._sealed = SealedBatch(batch_id, iat, _count(sealed.get("dropped")), tuple(records))

    def _save(self) -> None:
        sealed = self._sealed
        body = {
            "v": _FORMAT,
            "open": [record_to_map(r) for r in self._open],
            "dropped": self.dropped,
            "imported_until": self.imported_until,
            "sealed": None
            if sealed is None
            else {
                "batch_id": sealed.batch_id,
                "iat": sealed.iat,
                "dropped": sealed.dropped,
                "records": [record_to_map(r) for r in sealed.records],
            },
        }
        atomic_write_bytes(self._path, json.dumps(body, sort_keys=True).encode() + b"\n")

    # -- operations ---------------------------------------------------------------------------

    def add(self, record: ErrorRecord) -> None:
        """Count ``record``: into the open record of the same event, else as a new one (persisted).

        Raises:
            MalformedInput: the record is outside the wire contract (a bug of the caller).
        """
        record_to_map(record)  # refuse it here, not at upload time
        key = coalesce_key(record)
        with self._lock:
            for index, old in enumerate(self._open):
                if coalesce_key(old) == key:
                    self._open[index] = dataclasses.replace(
                        record,
                        count=min(old.count + record.count, MAX_COUNT),
                        first_at=min(old.first_at, record.first_at),
                        last_at=max(old.last_at, record.last_at),
                    )
                    break
            else:
                self._open.append(record)
                if len(self._open) > self._max:
                    self.dropped += len(self._open) - self._max
                    del self._open[: len(self._open) - self._max]
            self._save()

    def seal(self, *, iat: int) -> SealedBatch:
        """The batch to send: the one already sealed, else the open records sealed now (possibly none).

        An empty batch is the check-in heartbeat; it is sealed like any other.
        """
        with self._lock:
            if self._sealed is None:
                self._sealed = SealedBatch(secrets.token_hex(16), iat, self.dropped, tuple(self._open))
                self._open, self.dropped = [], 0
                self._save()
            return self._sealed

    def ack(self, batch_id: str) -> bool:
        """The service acknowledged ``batch_id``: forget it. Returns whether it was the sealed batch."""
        with self._lock:
            if self._sealed is None or not secrets.compare_digest(self._sealed.batch_id, batch_id):
                return False
            self._sealed = None
            self._save()
            return True

    def mark_imported(self, until: int) -> None:
        """Remember that events up to ``until`` were imported from the boot process's queue."""
        with self._lock:
            if until > self.imported_until:
                self.imported_until = until
                self._save()

    def sealed(self) -> SealedBatch | None:
        """The batch waiting for acknowledgement, if any."""
        with self._lock:
            return self._sealed

    def open_records(self) -> list[ErrorRecord]:
        """The records not yet sealed (oldest first)."""
        with self._lock:
            return list(self._open)

    def pending(self) -> int:
        """Records waiting: open plus sealed."""
        with self._lock:
            return len(self._open) + (len(self._sealed.records) if self._sealed else 0)


def _records(value: object) -> list[ErrorRecord]:
    if not isinstance(value, list):
        return []
    out = []
    for item in value[: 2 * MAX_RECORDS]:
        try:
            out.append(record_from_map(item))
        except MalformedInput:
            continue  # a damaged record is skipped; the others are kept
    return out


def _count(value: object) -> int:
    return value if type(value) is int and 0 <= value <= MAX_COUNT else 0
