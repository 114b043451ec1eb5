"""Storing checked error-report batches: a group of them in one transaction (ADR 0028).

A worker process takes the batches that wait for it in groups (up to
:data:`MAX_GROUP`), checks each on its own (:mod:`errorreports.ingest`), then stores
the accepted ones here, together: one INSERT of the batch rows (a replay, also a
concurrent copy, inserts nothing and is answered ``duplicate``), one executemany of
their events, one count into the buckets (:func:`bucket_counts.count_in`), one upsert
of the release activity, one commit. The statements and the commit, and the turn on
SQLite's one writer lock, are then paid once per group rather than once per batch.

A group that fails (a bucket-ID collision, a device deleted meanwhile, a batch refused
while storing) is rolled back and its batches stored one by one, so a batch's fault is its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from bastion.service.db import writer_lock
from bastion.service.errorreports.activity import ActivityEntry, record_activities
from bastion.service.errorreports.bucket_cap import cap_new_buckets
from bastion.service.errorreports.bucket_counts import (
    Contribution,
    GroupConflictError,
    count_in,
    dialect_insert,
    statement,
)
from bastion.service.errorreports.wire import Batch, Record
from bastion.service.errors import ServiceError
from bastion.service.models import ErrorBucket, ErrorEvent, ErrorReportBatch

__all__ = ["MAX_GROUP", "Checked", "store_group"]

#: Batches stored in one transaction at most (a group's event rows: at most 8 x 128).
MAX_GROUP = 8


@dataclass(frozen=True)
class Checked:
    """A batch that passed every check, with its rows built (no ORM objects: a refusal's rollback expires those)."""

    tenant_id: str
    device_id: str
    #: The service's record of the device's group (the batch's own claim is ignored).
    group_id: str | None
    batch: Batch
    now: dt.datetime
    #: The event rows, ``batch_pk`` still unset.
    events: list[dict[str, Any]]
    per_bucket: dict[str, list[Record]]
    titles: dict[str, tuple[str, str]]


def store_group(session: Session, group: Sequence[Checked], *, max_buckets: int) -> list[str | ServiceError]:
    """Store ``group``; per batch ``"accepted"``, ``"duplicate"``, or the ServiceError that refused it.

    Ends the session's read transaction first: on SQLite (WAL) a read snapshot that
    another writer overtook cannot become a write transaction (SQLITE_BUSY_SNAPSHOT,
    no busy wait); a transaction that starts with the INSERT waits for the lock instead.
    """
    session.commit()
    if len(group) <= 1:
        return _store_each(session, group, max_buckets=max_buckets)
    try:
        with writer_lock(session.get_bind()):
            statuses = _write(session, group, max_buckets=max_buckets)
            session.commit()
        return list(statuses)
    except GroupConflictError as exc:
        session.rollback()
        if not exc.conflicting or len(exc.conflicting) >= len(group):
            return _store_each(session, group, max_buckets=max_buckets)
        # Only the batches whose bucket IDs collide go alone: a device that found such a collision
        # must not make every group its batches join go one by one.
        rest = [n for n in range(len(group)) if n not in exc.conflicting]
        alone = sorted(exc.conflicting)
        out: dict[int, str | ServiceError] = {}
        # Those first: a copy of one of them among the rest is then its duplicate, as in the group.
        out.update(zip(alone, _store_each(session, [group[n] for n in alone], max_buckets=max_buckets), strict=True))
        out.update(zip(rest, store_group(session, [group[n] for n in rest], max_buckets=max_buckets), strict=True))
        return [out[n] for n in range(len(group))]
    except (DBAPIError, ServiceError):
        # DBAPIError: a device deleted meanwhile (a foreign key), a deadlock or any other database fault
        # of one batch. ServiceError: the group's one fresh batch could not be re-homed (count_in counts
        # a lone contribution as alone). One by one, each is its own batch's answer, not every batch's.
        session.rollback()
        return _store_each(session, group, max_buckets=max_buckets)


def _store_each(session: Session, group: Sequence[Checked], *, max_buckets: int) -> list[str | ServiceError]:
    """Store each batch of ``group`` in a transaction of its own."""
    out: list[str | ServiceError] = []
    for item in group:
        try:
            with writer_lock(session.get_bind()):
                status = _write(session, [item], max_buckets=max_buckets)[0]
                session.commit()
        except IntegrityError:  # a copy is ON CONFLICT DO NOTHING: this is its device, unclaimed meanwhile
            session.rollback()
            status = "duplicate"
        except ServiceError as exc:
            session.rollback()
            out.append(exc)
            continue
        out.append(status)
    return out


def _write(session: Session, group: Sequence[Checked], *, max_buckets: int) -> list[str]:
    """The group's statements in the caller's transaction; per batch ``"accepted"`` or ``"duplicate"``."""
    pks = _insert_batches(session, group)
    fresh = [(item, pks[n]) for n, item in enumerate(group) if n in pks]
    fresh_index = sorted(pks)  # contribution n is the batch group[fresh_index[n]]
    if fresh:
        events: list[list[dict[str, Any]]] = []
        contributions = []
        known = _existing_buckets(session, fresh)
        for item, pk in fresh:
            rows = [dict(event, batch_pk=pk) for event in item.events]
            per_bucket, titles = cap_new_buckets(
                session,
                item.tenant_id,
                item.per_bucket,
                item.titles,
                rows,
                max_buckets=max_buckets,
                actor=f"device:{item.device_id}",
                now=item.now,
                existing=known,
            )
            contributions.append(
                Contribution(
                    device_id=item.device_id,
                    tenant_id=item.tenant_id,
                    now=item.now,
                    per_bucket=per_bucket,
                    titles=titles,
                )
            )
            events.append(rows)
        try:
            moves = count_in(session, contributions)
        except GroupConflictError as exc:  # name the group's batches, not the contributions
            raise GroupConflictError(frozenset(fresh_index[n] for n in exc.conflicting)) from exc
        flat = [
            {**row, "bucket_id": moved.get(row["bucket_id"], row["bucket_id"])} if moved else row
            for moved, rows in zip(moves, events, strict=True)
            for row in rows
        ]
        if flat:
            session.connection().execute(statement(session, "events", lambda _: insert(ErrorEvent)), flat)
        record_activities(
            session,
            [
                ActivityEntry(
                    tenant_id=item.tenant_id,
                    device_id=item.device_id,
                    group_id=item.group_id,
                    os_version=item.batch.os_version,
                    installed=tuple((i.component_id, i.version) for i in item.batch.installed),
                    seen_at=item.now,
                )
                for item, _ in fresh
            ],
        )
    return ["accepted" if n in pks else "duplicate" for n in range(len(group))]


def _insert_batches(session: Session, group: Sequence[Checked]) -> dict[int, int]:
    """Insert the group's batch rows; group index -> primary key of those that were new.

    A later copy within the group, and a batch ID the device already sent (the unique
    (device_id, batch_id), also when a concurrent copy commits first), get no row.

    The rows go in (device_id, batch_id) order: an insert that meets a concurrent
    copy's uncommitted row waits for that transaction, so two groups holding copies
    in opposite orders would wait on each other (PostgreSQL ends one with a deadlock
    error, failing every batch of it, other devices' too). In one order, one waits.
    """
    first: dict[tuple[str, str], int] = {}
    for n, item in enumerate(group):
        first.setdefault((item.device_id, item.batch.batch_id), n)
    rows = [
        {
            "tenant_id": group[n].tenant_id,
            "device_id": device_id,
            "batch_id": batch_id,
            "iat": group[n].batch.iat,
            "received_at": group[n].now,
            "records": len(group[n].batch.records),
            "dropped": group[n].batch.dropped,
        }
        for (device_id, batch_id), n in sorted(first.items())
    ]
    build = statement(
        session,
        "batches",
        lambda d: (
            dialect_insert(d, ErrorReportBatch)
            .on_conflict_do_nothing(index_elements=["device_id", "batch_id"])
            .returning(ErrorReportBatch.id, ErrorReportBatch.device_id, ErrorReportBatch.batch_id)
        ),
    )
    inserted = session.connection().execute(build, rows).all()
    return {first[(str(device_id), str(batch_id))]: int(pk) for pk, device_id, batch_id in inserted}


def _existing_buckets(session: Session, fresh: Sequence[tuple[Checked, int]]) -> set[str]:
    """Which of the group's bucket IDs exist already (for the per-tenant bucket cap)."""
    ids = sorted({bid for item, _ in fresh for bid in item.per_bucket})
    if not ids:
        return set()
    found = session.connection().execute(statement(session, "existing-buckets", lambda _: _EXISTING), {"ids": ids})
    return {str(bid) for (bid,) in found}


_BUCKET_IDS = ErrorBucket.__table__.c.id
_EXISTING = select(_BUCKET_IDS).where(_BUCKET_IDS.in_(bindparam("ids", expanding=True)))
