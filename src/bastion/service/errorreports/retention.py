"""Bounded retention of error reports: raw events roll up into daily counts, old batch IDs go.

One pass (:func:`prune_once`, time a parameter) does, each bounded by
``prune_batch_rows`` rows so that a pass never holds a long transaction:

1. raw events whose ``last_at`` is older than ``event_retention`` are rolled up
   into ``error_daily_counts`` (per day, bucket, release, OS version and group) and deleted;
2. batch rows older than ``batch_retention`` (longer than the ``iat`` window, so
   a replay is refused by its age before its ID is forgotten) without events are deleted;
3. daily counts older than ``daily_retention`` are deleted.

The API workers run it periodically (:func:`retention_runner`); ``bastion
error-report prune`` runs one pass by hand.

Example:
    >>> async with retention_runner(sessionmaker, settings, clock, interval_s=3600.0):  # doctest: +SKIP
    ...     await serve()
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS, ErrorReportSettings
from bastion.service.models import ErrorDailyCount, ErrorEvent, ErrorReportBatch
from bastion.service.periodic import PeriodicTask, periodic

__all__ = ["Pruned", "prune_once", "retention_runner"]


@dataclass(frozen=True)
class Pruned:
    """What one pass did."""

    events_rolled_up: int
    batches_deleted: int
    daily_deleted: int


def prune_once(
    session: Session, *, now: dt.datetime, settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS
) -> Pruned:
    """One bounded retention pass; commits."""
    cutoff = now - settings.event_retention
    ids = list(
        session.scalars(
            select(ErrorEvent.id)
            .where(ErrorEvent.last_at < cutoff)
            .order_by(ErrorEvent.id)
            .limit(settings.prune_batch_rows)
        )
    )
    if ids:
        events = session.scalars(select(ErrorEvent).where(ErrorEvent.id.in_(ids))).all()
        groups: dict[tuple[object, ...], tuple[int, set[str]]] = {}
        for e in events:
            key = (
                e.tenant_id,
                e.last_at.date(),
                e.bucket_id,
                e.category,
                e.event_type,
                e.component_id,
                e.version,
                e.os_version,
                e.group_id,
            )
            total, devices = groups.get(key, (0, set()))
            devices.add(e.device_id)
            groups[key] = (total + e.count, devices)
        names = ("tenant_id", "day", "bucket_id", "category", "event_type", "component_id", "version", "os_version")
        rows = [
            {**dict(zip(names, key[:8], strict=True)), "group_id": key[8], "events": total, "devices": len(devices)}
            for key, (total, devices) in groups.items()
        ]
        session.execute(insert(ErrorDailyCount), rows)
        session.execute(delete(ErrorEvent).where(ErrorEvent.id.in_(ids)))
    old_batches = (
        select(ErrorReportBatch.id)
        .where(
            ErrorReportBatch.received_at < now - settings.batch_retention,
            ~select(ErrorEvent.id).where(ErrorEvent.batch_pk == ErrorReportBatch.id).exists(),
        )
        .limit(settings.prune_batch_rows)
    )
    batch_ids = list(session.scalars(old_batches))
    if batch_ids:
        session.execute(delete(ErrorReportBatch).where(ErrorReportBatch.id.in_(batch_ids)))
    day_cutoff = (now - settings.daily_retention).date()
    daily_ids = list(
        session.scalars(
            select(ErrorDailyCount.id).where(ErrorDailyCount.day < day_cutoff).limit(settings.prune_batch_rows)
        )
    )
    if daily_ids:
        session.execute(delete(ErrorDailyCount).where(ErrorDailyCount.id.in_(daily_ids)))
    session.commit()
    return Pruned(events_rolled_up=len(ids), batches_deleted=len(batch_ids), daily_deleted=len(daily_ids))


@asynccontextmanager
async def retention_runner(
    make_session: sessionmaker[Session],
    settings: ErrorReportSettings,
    clock: Callable[[], dt.datetime],
    interval_s: float | None,
) -> AsyncIterator[None]:
    """Run retention passes (:mod:`bastion.service.periodic`) for the duration of the block; ``None`` disables it."""

    def one_pass() -> str:
        with make_session() as session:
            pruned = prune_once(session, now=clock(), settings=settings)
        return str(pruned) if pruned.events_rolled_up or pruned.batches_deleted or pruned.daily_deleted else ""

    async with periodic(None if interval_s is None else PeriodicTask("error_report_retention", one_pass, interval_s)):
        yield
