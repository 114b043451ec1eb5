"""The device's persistent, bounded queue of update and app events.

Events wait in ``DEV/os-state/events.json`` (atomic rewrites) until the service
accepts a status report carrying them. When the queue is full the oldest events
are dropped and counted, so a device that cannot reach its service for a long
time keeps a bounded file and still says that it lost some.

Event kinds are those of docs/updates.md: ``app_installed``, ``app_started``,
``app_failed``, ``os_staged``, ``os_installed``, ``os_confirmed``,
``os_rolled_back`` (detail ``failed: ...``), ``os_trial_interrupted`` (detail
``interrupted: ...``), ``os_blocklist_cleared``, ``update_refused``, ``update_failed``, ``update_deferred``.

Example:
    >>> import tempfile, pathlib
    >>> q = EventQueue(pathlib.Path(tempfile.mkdtemp()) / "events.json")
    >>> q.record(at=1, kind="app_started", component_id="c", version="1.0.0")
    >>> [e.kind for e in q.peek(10)]
    ['app_started']
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion.hw.atomic import atomic_write_bytes

__all__ = ["EVENT_KINDS", "MAX_DETAIL_CHARS", "MAX_QUEUED_EVENTS", "Event", "EventQueue"]

#: Bound on the queue (oldest dropped beyond it).
MAX_QUEUED_EVENTS = 256
#: Bound on an event's detail text and identifiers.
MAX_DETAIL_CHARS = 200
MAX_ID_CHARS = 64
#: Bound on the queue file we read back.
MAX_QUEUE_FILE_BYTES = MAX_QUEUED_EVENTS * 1024 + 1024
#: Largest event time kept from the file (seconds since the epoch): the service's
#: bound on a reported time, so that every event kept can be reported.
MAX_EVENT_TIME = 2**37
EVENT_KINDS = frozenset(
    {
        "app_installed",
        "app_started",
        "app_failed",
        "os_staged",
        "os_installed",
        "os_confirmed",
        "os_rolled_back",
        "update_refused",
        "update_failed",
        "update_deferred",
        "app_denied",
        "sandbox_violation",
        "app_watchdog",
        "os_crashed",
        "sandbox_unavailable",
        "app_sideloaded",
        "sideload_refused",
        "app_power",
        "clock_set",
        "development_enabled",
        "development_disabled",
        "local_op_refused",
        "os_trial_interrupted",
        "os_blocklist_cleared",
    }
)


@dataclass(frozen=True)
class Event:
    """One thing that happened, as reported to the service."""

    at: int
    kind: str
    component_id: str = ""
    version: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """The wire and file form."""
        return asdict(self)


def _event(value: object) -> Event | None:
    """An event read back from the file, held to what :meth:`EventQueue.record` writes; None if it is not one.

    The queue file may hold anything after a power cut or a bad flash block. An
    event the service would refuse would block every later report (events leave
    the queue only once a report carrying them is accepted), so only events in
    the bounds the service accepts are kept (fuzz/harnesses/fuzz_event_queue.py).
    """
    if not isinstance(value, dict):
        return None
    at, kind = value.get("at"), value.get("kind")
    component_id, version, detail = (value.get(k, "") for k in ("component_id", "version", "detail"))
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= MAX_EVENT_TIME:
        return None
    if not isinstance(kind, str) or kind not in EVENT_KINDS:
        return None
    if not (isinstance(component_id, str) and isinstance(version, str) and isinstance(detail, str)):
        return None
    return Event(at, kind, component_id[:MAX_ID_CHARS], version[:MAX_ID_CHARS], detail[:MAX_DETAIL_CHARS])


class EventQueue:
    """A persistent FIFO of events; thread-safe.

    Args:
        path: the queue file.
        max_events: bound on the queue.
    """

    def __init__(self, path: Path, *, max_events: int = MAX_QUEUED_EVENTS) -> None:
        self._path = path
        self._max = max_events
        self._lock = threading.Lock()
        self._events, self.dropped = self._load()
        #: Called with each recorded event after it is persisted (the failure reporter listens here).
        self.listener: Callable[[Event], None] | None = None

    def _load(self) -> tuple[list[Event], int]:
        try:
            with self._path.open("rb") as handle:
                data = handle.read(MAX_QUEUE_FILE_BYTES + 1)
            value = json.loads(data) if len(data) <= MAX_QUEUE_FILE_BYTES else {}
        except (OSError, ValueError, RecursionError):  # RecursionError: nested too deeply
            return [], 0
        if not isinstance(value, dict) or not isinstance(value.get("events"), list):
            return [], 0
        events = [e for e in (_event(v) for v in value["events"]) if e is not None][-self._max :]
        dropped = value.get("dropped", 0)
        return events, dropped if type(dropped) is int and dropped >= 0 else 0

    def _save(self) -> None:
        body = {"events": [e.to_json() for e in self._events], "dropped": self.dropped}
        atomic_write_bytes(self._path, json.dumps(body, sort_keys=True).encode() + b"\n")

    def record(self, *, at: int, kind: str, component_id: str = "", version: str = "", detail: str = "") -> None:
        """Append an event (texts are truncated to their bounds) and persist the queue."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = Event(at, kind, component_id[:MAX_ID_CHARS], version[:MAX_ID_CHARS], detail[:MAX_DETAIL_CHARS])
        with self._lock:
            self._events.append(event)
            if len(self._events) > self._max:
                self.dropped += len(self._events) - self._max
                del self._events[: len(self._events) - self._max]
            self._save()
        if self.listener is not None:
            self.listener(event)

    def peek(self, limit: int) -> list[Event]:
        """The oldest ``limit`` events, still queued."""
        with self._lock:
            return list(self._events[:limit])

    def remove(self, events: list[Event]) -> None:
        """Drop ``events`` (the head of the queue, as returned by :meth:`peek`) once accepted."""
        with self._lock:
            count = 0
            while count < len(events) and count < len(self._events) and self._events[count] == events[count]:
                count += 1
            del self._events[:count]
            self._save()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def all(self) -> list[Event]:
        """Every queued event (oldest first)."""
        with self._lock:
            return list(self._events)
