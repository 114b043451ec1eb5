"""SystemEventNotifications and SoftwareUpdateDeferral: hear about updates, and hold them back.

With ``"SystemEventNotifications": true`` an app receives the OS's update
events, for an app update (``update == "app"``) or an OS update (``"os"``):

- ``update_pending``: an update is available; it may be held back for at most
  ``max_deferral_minutes`` more;
- ``update_deferred``: the apps' deferral holds it for now;
- ``update_ready``: it is installed now (an app update restarts its app, an OS
  update reboots the device): save your state.

With ``"SoftwareUpdateDeferral": true`` an app may ask the OS not to install for
a while (:func:`defer_event`, at most 24 h per request and 24 h in total per
update) and withdraw that again (:func:`resume_event`); Azure Sphere's
``SysEvent_DeferEvent`` and ``SysEvent_ResumeEvent``.

Example::

    from bastion.applibs import sysevent
    event = sysevent.wait_for_event(timeout=60)
    if event is not None and event.kind == "update_pending" and busy():
        sysevent.defer_event(minutes=min(30, event.max_deferral_minutes))
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from dataclasses import dataclass

from bastion.applibs._client import channel, connection

__all__ = ["MAX_DEFER_MINUTES", "SystemEvent", "defer_event", "resume_event", "wait_for_event"]

#: The most one request defers.
MAX_DEFER_MINUTES = 24 * 60
#: The OS's bound on one waiting request; longer waits are several requests.
_POLL_MS = 10_000

_lock = threading.Lock()
_cursor: int | None = None
_queued: deque[SystemEvent] = deque()


@dataclass(frozen=True)
class SystemEvent:
    """An update event from the OS."""

    seq: int
    kind: str
    update: str
    max_deferral_minutes: int
    at: dt.datetime
    detail: str = ""


def wait_for_event(timeout: float | None = None) -> SystemEvent | None:
    """The next system event; waits up to ``timeout`` seconds (``None``: until one comes).

    The first call returns the events of an update already in progress.
    """
    global _cursor  # noqa: PLW0603 - one event cursor per process
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    conn = channel("sysevent")
    while True:
        with _lock:
            if _queued:
                return _queued.popleft()
            after = _cursor
        left_ms = _POLL_MS if deadline is None else int(max(deadline - time.monotonic(), 0.0) * 1000)
        reply = conn.call("sysevent.wait", {"after": after, "timeout_ms": min(left_ms, _POLL_MS)})
        with _lock:
            _cursor = int(reply["last_seq"])
            for e in reply.get("events", []):
                _queued.append(
                    SystemEvent(
                        int(e["seq"]),
                        str(e["kind"]),
                        str(e["update"]),
                        int(e["max_deferral_minutes"]),
                        dt.datetime.fromtimestamp(int(e["at"]), dt.UTC),
                        str(e.get("detail", "")),
                    )
                )
            if _queued:
                return _queued.popleft()
        if deadline is not None and time.monotonic() >= deadline:
            return None


def defer_event(minutes: int) -> dt.datetime:
    """Ask the OS not to install updates for ``minutes`` (1..1440); returns the time asked for.

    The OS caps the total hold at 24 h per update, after which it installs.
    """
    reply = connection().call("sysevent.defer", {"minutes": minutes})
    return dt.datetime.fromtimestamp(int(reply["until"]), dt.UTC)


def resume_event() -> None:
    """Withdraw this app's deferral: updates may go ahead."""
    connection().call("sysevent.resume")
