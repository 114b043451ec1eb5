"""The background task that evaluates every live rollout: the gate that halts and advances stages by itself.

Each API worker runs it. Two workers evaluating the same rollout at once are
harmless: every change is a compare-and-set on the rollout's ``version``, so one
wins and the other's evaluation is dropped (``lost``).

Example:
    >>> async with rollout_gate(sessions, settings, clock=c, publisher=p, health=h, interval_s=30):  # doctest: +SKIP
    ...     await serve()
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.config import Settings
from bastion.service.errors import ConfigError
from bastion.service.fleet.targets import Publisher
from bastion.service.models import Rollout
from bastion.service.periodic import PeriodicTask, periodic
from bastion.service.rollouts.health import HealthSource
from bastion.service.rollouts.rules import LIVE_STATES
from bastion.service.rollouts.service import Outcome, evaluate

__all__ = [
    "MAX_GATE_INTERVAL_S",
    "MAX_ROLLOUTS_PER_PASS",
    "ROLLOUT_GATE_INTERVAL_S",
    "evaluate_due",
    "gate_interval_from_env",
    "rollout_gate",
]

#: How often a worker evaluates the live rollouts (env ``BASTION_ROLLOUT_GATE_INTERVAL_S``).
ROLLOUT_GATE_INTERVAL_S = 30.0
#: Bound on the configured interval (a gate that runs less than hourly would let a bad stage spread).
MAX_GATE_INTERVAL_S = 3600.0
#: Bound on the rollouts one pass evaluates (oldest first; the rest wait for the next pass).
MAX_ROLLOUTS_PER_PASS = 500

_log = logging.getLogger(__name__)


def gate_interval_from_env(env: Mapping[str, str]) -> float:
    """``BASTION_ROLLOUT_GATE_INTERVAL_S`` (seconds, ``0 < s <= 3600``), else :data:`ROLLOUT_GATE_INTERVAL_S`.

    Raises:
        ConfigError: not a number in range.
    """
    raw = env.get("BASTION_ROLLOUT_GATE_INTERVAL_S")
    if raw is None:
        return ROLLOUT_GATE_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_GATE_INTERVAL_S:  # also refuses NaN
        raise ConfigError(
            f"BASTION_ROLLOUT_GATE_INTERVAL_S must be a number of seconds in (0, {MAX_GATE_INTERVAL_S:g}]"
        )
    return value


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

    def one_pass() -> None:  # evaluate_due logs each halt, advance and completion itself
        evaluate_due(make_session(), settings, now=clock(), publisher=publisher(), health=health())

    async with periodic(None if interval_s is None else PeriodicTask("rollout_gate", one_pass, interval_s)):
        yield
