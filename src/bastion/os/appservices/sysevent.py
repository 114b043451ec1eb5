"""SystemEventNotifications and SoftwareUpdateDeferral: update events to apps, deferral requests back.

The update agent publishes, for each kind of update (``app`` or ``os``):

- ``update_pending``: an update is available; ``max_deferral_minutes`` says how
  long the apps may still hold it back. When an installed app hears this and
  may defer, the agent waits a short notice (``AgentSettings.update_notice``)
  before it goes on.
- ``update_deferred``: the apps' requests hold it until ``until``.
- ``update_ready``: the update is installed now (an app update restarts that
  app, an OS update reboots the device); save state. ``max_deferral_minutes`` 0.

==================  ========================  ================================  ==========================
op                  capability                args                              result
==================  ========================  ================================  ==========================
``sysevent.wait``   SystemEventNotifications  ``after`` (a ``seq`` or null),    ``events`` (``seq`` order),
                                              ``timeout_ms``                    ``last_seq``
``sysevent.defer``  SoftwareUpdateDeferral    ``minutes`` (1..1440)             ``until`` (epoch s)
``sysevent.resume`` SoftwareUpdateDeferral    none                              ``{}``
==================  ========================  ================================  ==========================

``wait`` with ``after`` null returns the events of the update in progress (not
those of updates already settled), then the app passes the ``last_seq`` it saw.
It waits at most :data:`~bastion.os.appservices.channel.MAX_WAIT_S` per request.

A deferral request is standing: "do not install in the next N minutes" (at
most 24 h per request), replacing the app's previous one; ``resume`` withdraws
it. Requests are kept in a file (they survive an OS restart). The agent honours
the latest request of the apps that hold ``SoftwareUpdateDeferral``, capped at
24 h in total from the first check it deferred (:mod:`bastion.os.updates.policy`).

Example (OS side)::

    events = SysEventService(state_dir.path / "sysevents.json")
    events.publish("update_pending", update="app", max_deferral_minutes=1440, now=now)
    # app side: bastion.applibs.sysevent.defer_event(60)
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion.images.fileio import FileTooLargeError, atomic_write_bytes, read_bounded
from bastion.os.appservices.channel import MAX_WAIT_S
from bastion.os.appservices.clock import current_time
from bastion.os.appservices.registry import AppContext, Args, BadRequestError, Operation, Reply, arg_int

__all__ = [
    "EVENT_KINDS",
    "MAX_DEFER_MINUTES",
    "OPERATIONS",
    "SysEventLimits",
    "SysEventService",
    "SystemEvent",
]

#: What the agent publishes.
EVENT_KINDS = frozenset({"update_pending", "update_ready", "update_deferred"})
#: The most one deferral request asks for (Azure Sphere's 24 h); the cumulative cap is the policy's.
MAX_DEFER_MINUTES = 24 * 60
_MAX_EPOCH = 2**40


@dataclass(frozen=True)
class SysEventLimits:
    """Bounds of system events.

    Attributes:
        max_events: events kept for apps to read (oldest dropped).
        max_wait_s: longest one wait request holds its thread.
        max_requests: deferral requests kept (one per app).
        max_file_bytes: bound on the requests file read back.
    """

    max_events: int = 32
    max_wait_s: float = MAX_WAIT_S
    max_requests: int = 64
    max_file_bytes: int = 16 * 1024


@dataclass(frozen=True)
class SystemEvent:
    """One event for the apps."""

    seq: int
    kind: str
    update: str
    max_deferral_minutes: int
    at: int
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return asdict(self)


class SysEventService:
    """Publishes update events to apps and keeps their deferral requests.

    Args:
        path: the file that keeps deferral requests across OS restarts (``None``: memory only).
        limits: the bounds.
    """

    def __init__(self, path: Path | None = None, limits: SysEventLimits | None = None) -> None:
        self._path = path
        self.limits = limits or SysEventLimits()
        self._cond = threading.Condition()
        self._events: deque[SystemEvent] = deque(maxlen=self.limits.max_events)
        self._seq = 0
        self._settled = 0
        self._requests: dict[str, int] = self._load()

    # --- events -------------------------------------------------------------------

    def publish(
        self, kind: str, *, update: str, max_deferral_minutes: int, now: dt.datetime, detail: str = ""
    ) -> SystemEvent:
        """Publish an event to every app that waits for system events.

        Raises:
            ValueError: ``kind`` is not one of :data:`EVENT_KINDS` (a programming error).
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown system event {kind!r}")
        with self._cond:
            self._seq += 1
            event = SystemEvent(self._seq, kind, update, max(max_deferral_minutes, 0), int(now.timestamp()), detail)
            self._events.append(event)
            self._cond.notify_all()
            return event

    def settle(self) -> None:
        """The update in progress is over: an app asking afresh no longer gets its events."""
        with self._cond:
            self._settled = self._seq

    def wait(self, after: int | None, timeout_s: float) -> tuple[list[SystemEvent], int]:
        """Events with ``seq`` above ``after`` (``None``: those of the update in progress), waiting up to ``timeout_s``.

        Returns:
            The events and the last ``seq`` the caller has now seen.
        """
        with self._cond:
            floor = self._settled if after is None else min(after, self._seq)
            self._cond.wait_for(lambda: self._seq > floor, min(max(timeout_s, 0.0), self.limits.max_wait_s))
            events = [e for e in self._events if e.seq > floor]
            return events, max(floor, self._seq)

    # --- deferral requests --------------------------------------------------------------

    def defer(self, component_id: str, minutes: int, now: dt.datetime) -> dt.datetime:
        """Record that ``component_id`` asks for no install for ``minutes`` from ``now``; returns the time asked for.

        Raises:
            BadRequestError: ``minutes`` is out of 1..:data:`MAX_DEFER_MINUTES`, or too many apps ask.
        """
        if not 1 <= minutes <= MAX_DEFER_MINUTES:
            raise BadRequestError(f"a deferral is 1..{MAX_DEFER_MINUTES} minutes")
        # Whole seconds, rewritten only when a request changes: at most one write a second per app.
        until = int((now + dt.timedelta(minutes=minutes)).timestamp())
        with self._cond:
            if component_id not in self._requests and len(self._requests) >= self.limits.max_requests:
                raise BadRequestError("too many deferral requests are held")
            if self._requests.get(component_id) != until:
                self._requests[component_id] = until
                self._save()
        return dt.datetime.fromtimestamp(until, dt.UTC)

    def resume(self, component_id: str) -> None:
        """Withdraw ``component_id``'s deferral request."""
        with self._cond:
            if self._requests.pop(component_id, None) is not None:
                self._save()

    def requests(self) -> dict[str, dt.datetime]:
        """Every app's standing request: component ID -> the time it asked for."""
        with self._cond:
            return {cid: dt.datetime.fromtimestamp(until, dt.UTC) for cid, until in self._requests.items()}

    def _load(self) -> dict[str, int]:
        if self._path is None:
            return {}
        try:
            value = json.loads(read_bounded(self._path, self.limits.max_file_bytes))
        except (OSError, ValueError, FileTooLargeError):
            return {}
        if not isinstance(value, dict):
            return {}
        return {
            str(cid): until
            for cid, until in list(value.items())[: self.limits.max_requests]
            if isinstance(until, int) and not isinstance(until, bool) and 0 < until < _MAX_EPOCH
        }

    def _save(self) -> None:
        if self._path is not None:
            atomic_write_bytes(self._path, json.dumps(self._requests, sort_keys=True).encode() + b"\n", mode=0o600)


def _wait(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(SysEventService)
    after = args.get("after")
    if after is not None:
        after = arg_int(args, "after", low=0, high=2**62)
    bound_ms = int(service.limits.max_wait_s * 1000)
    timeout_ms = arg_int(args, "timeout_ms", low=0, high=bound_ms, default=bound_ms)
    events, last = service.wait(after, timeout_ms / 1000)
    return Reply({"events": [e.to_json() for e in events], "last_seq": last})


def _defer(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(SysEventService)
    minutes = arg_int(args, "minutes", low=1, high=MAX_DEFER_MINUTES)
    until = service.defer(ctx.component_id, minutes, current_time(ctx))
    return Reply({"until": int(until.timestamp())})


def _resume(ctx: AppContext, args: Args) -> Reply:
    del args
    ctx.service(SysEventService).resume(ctx.component_id)
    return Reply({})


OPERATIONS = (
    Operation("sysevent.wait", _wait, capability="SystemEventNotifications"),
    Operation("sysevent.defer", _defer, capability="SoftwareUpdateDeferral"),
    Operation("sysevent.resume", _resume, capability="SoftwareUpdateDeferral"),
)
