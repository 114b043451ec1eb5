"""The background task that keeps every group's timestamp (and snapshot) fresh.

Each API worker runs it; the per-group file lock and the "less than half the
lifetime left" rule make concurrent runs harmless (only one re-signs).

Example:
    >>> async with tuf_refresher(settings, clock, interval_s=TUF_REFRESH_INTERVAL_S):  # doctest: +SKIP
    ...     await serve()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from bastion.service.config import Settings
from bastion.service.errors import ServiceError
from bastion.service.tuf.repository import refresh_all

__all__ = ["TUF_REFRESH_INTERVAL_S", "refresh_loop", "tuf_refresher"]

#: How often a worker checks every group (the timestamp lives 1 day and is
#: re-signed with 12 h left, so an hour leaves ample margin for a missed run).
TUF_REFRESH_INTERVAL_S = 3600.0

_log = logging.getLogger(__name__)


async def refresh_loop(settings: Settings, clock: Callable[[], dt.datetime], interval_s: float) -> None:
    """Run :func:`refresh_all` now and then every ``interval_s`` seconds, forever.

    Failures are logged (a group's id and the error code, never key material)
    and retried at the next interval.
    """
    while True:
        try:
            count = await asyncio.to_thread(refresh_all, settings, now=clock())
        except ServiceError as exc:
            _log.warning("TUF refresh failed: %s (%s)", exc.detail, exc.code)
        except OSError as exc:
            _log.warning("TUF refresh failed: %s", exc.strerror)
        else:
            if count:
                _log.info("TUF refresh re-signed %d group(s)", count)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def tuf_refresher(
    settings: Settings, clock: Callable[[], dt.datetime], interval_s: float | None
) -> AsyncIterator[None]:
    """Run :func:`refresh_loop` for the duration of the block; ``None`` disables it (tests)."""
    if interval_s is None:
        yield
        return
    task = asyncio.create_task(refresh_loop(settings, clock, interval_s), name="tuf-refresh")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
