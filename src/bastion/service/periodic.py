"""One runner for the service's periodic tasks (ADR 0026): TUF and CRL refresh, the rollout gate, retention.

Every task is a blocking pass (it opens its own sessions) that the runner calls
in a worker thread, then waits ``interval_s`` give or take ``jitter`` (a
fraction of the interval, so that the workers of one host, started together,
do not all hit the database in the same second). A pass that raises is logged
(the error's code or type, never its text: a database error may quote a
parameter) and counted in ``bastion_periodic_runs_total{outcome="error"}``; the
loop goes on at the next interval. It never dies of a failed pass.

On shutdown the runner lets a pass in progress finish (up to
:data:`STOP_GRACE_S`), so the engine is not disposed of under a running
transaction, then cancels what is left.

Example:
    >>> task = PeriodicTask("crl_refresh", lambda: refresh_crls_once(...), interval_s=60.0)  # doctest: +SKIP
    >>> async with periodic(task, None):  # None: a task that is off (tests)  # doctest: +SKIP
    ...     await serve()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from bastion.service import metrics
from bastion.service.errors import ServiceError

__all__ = [
    "DEFAULT_JITTER",
    "STOP_GRACE_S",
    "PeriodicTask",
    "describe_failure",
    "next_delay",
    "periodic",
    "run_periodically",
]

#: Default spread of the wait between passes, as a fraction of the interval (±10 %).
DEFAULT_JITTER = 0.1
#: How long shutdown waits for a pass in progress before cancelling it.
STOP_GRACE_S = 10.0

_NAME = re.compile(r"[a-z0-9_]{1,48}")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicTask:
    """A named blocking pass and its period.

    Attributes:
        name: ``[a-z0-9_]`` (a metric label and the log's subject).
        run: one pass; a truthy result is logged at INFO (e.g. "re-signed 2 CRLs").
        interval_s: seconds between passes, > 0.
        jitter: spread of the wait, a fraction of ``interval_s`` in ``[0, 1)``.
    """

    name: str
    run: Callable[[], object]
    interval_s: float
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError("a periodic task's name is 1-48 of [a-z0-9_]")
        if not self.interval_s > 0:  # also refuses NaN
            raise ValueError("a periodic task's interval must be > 0 seconds")
        if not 0 <= self.jitter < 1:
            raise ValueError("a periodic task's jitter is a fraction in [0, 1)")


def next_delay(interval_s: float, jitter: float, unit: float) -> float:
    """The wait before the next pass: ``interval_s`` scaled by ``1 ± jitter``; ``unit`` is uniform in [0, 1)."""
    return interval_s * (1.0 + jitter * (2.0 * unit - 1.0))


def describe_failure(exc: BaseException) -> str:
    """What a log line may say about a failed pass: a service error's detail and code, else only its kind."""
    if isinstance(exc, ServiceError):
        return f"{exc.detail} ({exc.code})"
    if isinstance(exc, SQLAlchemyError):
        return f"database error {type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'no detail'}"
    return type(exc).__name__


async def run_periodically(
    task: PeriodicTask, stop: asyncio.Event | None = None, *, unit: Callable[[], float] = random.random
) -> None:
    """Run ``task`` now and then every interval (± jitter) until ``stop`` is set (or forever)."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            result = await asyncio.to_thread(task.run)
        except Exception as exc:  # noqa: BLE001 - a periodic task logs, counts and goes on; it never dies
            metrics.PERIODIC_RUNS.labels(task=task.name, outcome="error").inc()
            _log.warning("periodic task %s failed: %s", task.name, describe_failure(exc))
        else:
            metrics.PERIODIC_RUNS.labels(task=task.name, outcome="ok").inc()
            if result:
                _log.info("periodic task %s: %s", task.name, result)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=next_delay(task.interval_s, task.jitter, unit()))


@asynccontextmanager
async def periodic(*tasks: PeriodicTask | None, grace_s: float = STOP_GRACE_S) -> AsyncIterator[None]:
    """Run each task (``None``: that one is off) for the duration of the block; stop them all on exit."""
    stop = asyncio.Event()
    running = [
        asyncio.create_task(run_periodically(t, stop), name=f"periodic-{t.name}") for t in tasks if t is not None
    ]
    try:
        yield
    finally:
        stop.set()
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace_s)
            for late in pending:
                late.cancel()
            for late in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await late
