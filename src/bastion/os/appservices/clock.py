"""The OS's clock as the applibs handlers read it (one injected clock; tests pass their own).

Handlers that need "now" (a deferral request, a watchdog deadline, the app's
device time) read it here, so every time-dependent rule stays a function of a
``now`` parameter in its service, and tests drive time without patching.

Example::

    services.add(OsClock(lambda: fake_now))
    now = current_time(ctx)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from bastion.os.appservices.registry import AppContext

__all__ = ["OsClock", "current_time", "utcnow"]


def utcnow() -> dt.datetime:
    """The host's wall clock, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class OsClock:
    """The clock the OS runs on.

    Args:
        now: returns the current time, timezone-aware (the runtime's clock).
    """

    def __init__(self, now: Callable[[], dt.datetime] = utcnow) -> None:
        self._now = now

    def now(self) -> dt.datetime:
        """The current time."""
        return self._now()


def current_time(ctx: AppContext) -> dt.datetime:
    """The OS clock registered for ``ctx``'s services, else the host's wall clock."""
    clock = ctx.services.get(OsClock)
    return clock.now() if isinstance(clock, OsClock) else utcnow()
