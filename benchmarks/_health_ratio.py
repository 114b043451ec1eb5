"""Minimal stand-in for the health helper's ``measure``: a health-like aggregate against a bare SQL one.

At the merge the health slice's file replaces this one (it times ``fleet health``
over 1 million stored events). Here: the crash-free style aggregate over
whatever error events the ingest benchmark stored, through the ORM, against the
same aggregate as bare SQL on the same rows; the ratio is ORM time / bare time.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select, text

from bastion.service.db import create_engine_for
from bastion.service.models import ErrorEvent

__all__ = ["measure"]

_CRASH = ("AppCrash", "Watchdog")
_ROUNDS = 5


def _best(run: object) -> float:
    best = float("inf")
    for _ in range(_ROUNDS):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def measure(database_url: str) -> float:
    """ORM aggregate time / bare SQL time (crashed devices per release) over the stored events."""
    engine = create_engine_for(database_url)
    orm_query = (
        select(ErrorEvent.component_id, ErrorEvent.version, func.count(func.distinct(ErrorEvent.device_id)))
        .where(ErrorEvent.category.in_(_CRASH))
        .group_by(ErrorEvent.component_id, ErrorEvent.version)
    )
    bare = text(
        "SELECT component_id, version, count(DISTINCT device_id) FROM error_events "
        "WHERE category IN ('AppCrash', 'Watchdog') GROUP BY component_id, version"
    )
    try:
        with engine.connect() as conn:
            orm_s = _best(lambda: conn.execute(orm_query).all())
            bare_s = _best(lambda: conn.execute(bare).all())
    finally:
        engine.dispose()
    return orm_s / bare_s if bare_s else 0.0
