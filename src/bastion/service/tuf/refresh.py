"""The background task that keeps every group's timestamp (and snapshot) fresh.

Each API worker runs it; the per-group file lock and the "less than half the
lifetime left" rule make concurrent runs harmless (only one re-signs).

Example:
    >>> async with tuf_refresher(settings, clock, interval_s=TUF_REFRESH_INTERVAL_S):  # doctest: +SKIP
    ...     await serve()
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from bastion.service.config import Settings
from bastion.service.periodic import PeriodicTask, periodic, run_periodically
from bastion.service.tuf.repository import refresh_all

__all__ = ["TUF_REFRESH_INTERVAL_S", "refresh_loop", "tuf_refresher"]

#: How often a worker checks every group (the timestamp lives 1 day and is
#: re-signed with 12 h left, so an hour leaves ample margin for a missed run).
TUF_REFRESH_INTERVAL_S = 3600.0


def _task(settings: Settings, clock: Callable[[], dt.datetime], interval_s: float) -> PeriodicTask:
    def one_pass() -> str:
        count = refresh_all(settings, now=clock())
        return f"re-signed {count} group(s)" if count else ""

    return PeriodicTask("tuf_refresh", one_pass, interval_s)


async def refresh_loop(settings: Settings, clock: Callable[[], dt.datetime], interval_s: float) -> None:
    """Run :func:`refresh_all` now and then every ``interval_s`` seconds (± jitter), forever.

    Failures are logged (the error code, never key material), counted, and retried at
    the next interval (:func:`bastion.service.periodic.run_periodically`).
    """
    await run_periodically(_task(settings, clock, interval_s))


@asynccontextmanager
async def tuf_refresher(
    settings: Settings, clock: Callable[[], dt.datetime], interval_s: float | None
) -> AsyncIterator[None]:
    """Run the refresh passes for the duration of the block; ``None`` disables it (tests)."""
    async with periodic(None if interval_s is None else _task(settings, clock, interval_s)):
        yield
