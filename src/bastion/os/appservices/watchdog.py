"""The application watchdog: an app that arms it and then stops kicking it is killed and restarted.

==================  ===================  =========================================
op                  args                 effect
==================  ===================  =========================================
``watchdog.arm``    ``timeout_ms``       deadline = now + timeout (re-arming resets it)
``watchdog.kick``   none                 deadline = now + the armed timeout
``watchdog.disarm`` none                 no deadline
==================  ===================  =========================================

No capability is needed: any app may watch itself (Azure Sphere apps do this
with a timer and ``abort``; here the OS does the killing, so a hung app that
cannot run its own timer is caught too). The timeout is bounded
(:attr:`WatchdogLimits.min_timeout_s`..:attr:`WatchdogLimits.max_timeout_s`).
The app manager asks :meth:`WatchdogService.expired` at each poll; for an app
past its deadline it kills the app, restarts it with the normal crash backoff
and records an ``app_watchdog`` event that says why. A restarted app starts
unarmed. Time is a parameter of every method; the handlers read the OS clock.

Example::

    dog = WatchdogService()
    dog.arm(component_id, 5.0, now)
    dog.expired(now + dt.timedelta(seconds=6))     # -> [component_id]
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from bastion.os.appservices.clock import current_time
from bastion.os.appservices.registry import AppContext, Args, NotFoundError, Operation, Reply, arg_int

__all__ = ["OPERATIONS", "WATCHDOG_EVENT", "Deadline", "WatchdogLimits", "WatchdogService"]

#: The event kind of a watchdog kill.
WATCHDOG_EVENT = "app_watchdog"


@dataclass(frozen=True)
class WatchdogLimits:
    """Bounds of the watchdog timeout.

    Attributes:
        min_timeout_s: shortest timeout (the manager polls about once a second).
        max_timeout_s: longest timeout.
    """

    min_timeout_s: float = 1.0
    max_timeout_s: float = 3600.0


@dataclass(frozen=True)
class Deadline:
    """An armed watchdog: when it was armed, its timeout and when it fires."""

    armed_at: dt.datetime
    timeout_s: float
    due: dt.datetime


class WatchdogService:
    """The apps' watchdog deadlines.

    Args:
        limits: the bounds.
    """

    def __init__(self, limits: WatchdogLimits | None = None) -> None:
        self.limits = limits or WatchdogLimits()
        self._lock = threading.Lock()
        self._deadlines: dict[str, Deadline] = {}

    def arm(self, component_id: str, timeout_s: float, now: dt.datetime) -> Deadline:
        """Arm (or re-arm) the app's watchdog.

        Raises:
            ValueError: the timeout is out of bounds (the handler checks first).
        """
        if not self.limits.min_timeout_s <= timeout_s <= self.limits.max_timeout_s:
            raise ValueError("watchdog timeout out of bounds")
        deadline = Deadline(now, timeout_s, now + dt.timedelta(seconds=timeout_s))
        with self._lock:
            self._deadlines[component_id] = deadline
        return deadline

    def kick(self, component_id: str, now: dt.datetime) -> Deadline:
        """Push the deadline out by the armed timeout.

        Raises:
            NotFoundError: the app's watchdog is not armed.
        """
        with self._lock:
            current = self._deadlines.get(component_id)
            if current is None:
                raise NotFoundError("the watchdog is not armed")
            deadline = Deadline(current.armed_at, current.timeout_s, now + dt.timedelta(seconds=current.timeout_s))
            self._deadlines[component_id] = deadline
            return deadline

    def disarm(self, component_id: str) -> None:
        """Remove the app's deadline (also when the app stops)."""
        with self._lock:
            self._deadlines.pop(component_id, None)

    def deadline(self, component_id: str) -> Deadline | None:
        """The app's deadline, if armed."""
        with self._lock:
            return self._deadlines.get(component_id)

    def expired(self, now: dt.datetime) -> list[str]:
        """Component IDs whose deadline has passed at ``now`` (still armed until :meth:`disarm`)."""
        with self._lock:
            return sorted(cid for cid, d in self._deadlines.items() if d.due <= now)


def _arm(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(WatchdogService)
    low, high = int(service.limits.min_timeout_s * 1000), int(service.limits.max_timeout_s * 1000)
    timeout_ms = arg_int(args, "timeout_ms", low=low, high=high)
    deadline = service.arm(ctx.component_id, timeout_ms / 1000, current_time(ctx))
    return Reply({"due": deadline.due.timestamp()})


def _kick(ctx: AppContext, args: Args) -> Reply:
    del args
    deadline = ctx.service(WatchdogService).kick(ctx.component_id, current_time(ctx))
    return Reply({"due": deadline.due.timestamp()})


def _disarm(ctx: AppContext, args: Args) -> Reply:
    del args
    ctx.service(WatchdogService).disarm(ctx.component_id)
    return Reply({})


OPERATIONS = (
    Operation("watchdog.arm", _arm, capability=None),
    Operation("watchdog.kick", _kick, capability=None),
    Operation("watchdog.disarm", _disarm, capability=None),
)
