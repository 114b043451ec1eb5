"""The background task that evaluates every live rollout: the gate that halts and advances stages by itself.

Each API worker runs it. Two workers evaluating the same rollout at once are
harmless: every change is a compare-and-set on the rollout's ``version``, so one
wins and the other's evaluation is dropped (``lost``).

Example:
    >>> async with rollout_gate(sessions, settings, clock=c, publisher=p, health=h, interval_s=30):  # doctest: +SKIP
    ...     await serve()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.config import Settings
from bastion.service.errors import ServiceError
from bastion.service.fleet.targets import Publisher
from bastion.service.models import Rollout
from bastion.service.rollouts.health import HealthSource
from bastion.service.rollouts.rules import LIVE_STATES
from bastion.service.rollouts.service import Outcome, evaluate

__all__ = ["MAX_ROLLOUTS_PER_PASS", "ROLLOUT_GATE_INTERVAL_S", "evaluate_due", "rollout_gate"]

#: How often a worker evaluates the live rollouts (env ``BASTION_ROLLOUT_GATE_INTERVAL_S``).
ROLLOUT_GATE_INTERVAL_S = 30.0
#: Bound on the rollouts one pass evaluates (oldest first; the rest wait for the next pass).
MAX_ROLLOUTS_PER_PASS = 500

_log = logging.getLogger(__name__)


def evaluate_due(
    make_session: sessionmaker[Session],
    settings: Settings,
    *,
    now: dt.datetime,
    publisher: Publisher,
    health: HealthSource,
) -> dict[int, Outcome]:
    """One pass: evaluate every live rollout, each in a session of its own; return what each did."""
    with make_session() as session:
        ids = session.scalars(
            select(Rollout.id).where(Rollout.state.in_(LIVE_STATES)).order_by(Rollout.id).limit(MAX_ROLLOUTS_PER_PASS)
        ).all()
    outcomes: dict[int, Outcome] = {}
    for rollout_id in ids:
        with make_session() as session:
            rollout = session.get(Rollout, rollout_id)
            if rollout is None:
                continue
            outcomes[rollout_id] = evaluate(
                session, rollout, now=now, settings=settings, publisher=publisher, health=health
            )
            if outcomes[rollout_id].action in ("halted", "advanced", "completed"):
                _log.info("rollout %d %s", rollout_id, outcomes[rollout_id].action)
    return outcomes


async def _loop(
    make_session: Callable[[], sessionmaker[Session]],
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime],
    publisher: Callable[[], Publisher],
    health: Callable[[], HealthSource],
    interval_s: float,
) -> None:
    while True:
        try:
            await asyncio.to_thread(
                evaluate_due, make_session(), settings, now=clock(), publisher=publisher(), health=health()
            )
        except ServiceError as exc:
            _log.warning("rollout gate pass failed: %s (%s)", exc.detail, exc.code)
        except SQLAlchemyError as exc:
            _log.warning("rollout gate pass failed: database error %s", type(exc).__name__)
        except OSError as exc:
            _log.warning("rollout gate pass failed: %s", exc.strerror)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def rollout_gate(
    make_session: Callable[[], sessionmaker[Session]],
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime],
    publisher: Callable[[], Publisher],
    health: Callable[[], HealthSource],
    interval_s: float | None,
) -> AsyncIterator[None]:
    """Run the gate loop for the duration of the block; ``None`` disables it (tests call :func:`evaluate_due`).

    The session factory, publisher and health source are looked up at each pass
    (tests swap the app's publisher after start-up).
    """
    if interval_s is None:
        yield
        return
    task = asyncio.create_task(
        _loop(make_session, settings, clock=clock, publisher=publisher, health=health, interval_s=interval_s),
        name="rollout-gate",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
