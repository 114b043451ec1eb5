"""Counting a group of accepted batches into their buckets (docs/error-reports.md "Service: ingest").

One call counts every batch of a group commit (:mod:`errorreports.store`) with a
handful of set-based statements, whatever the number of batches and records:
the new buckets in one INSERT, the buckets read (locked on PostgreSQL) in one
SELECT, "has this device been counted here" in one or two more, and the bucket,
device and version counters written back in one executemany each.

The counts are those of storing the batches one after the other: a device is
counted once per bucket and per (bucket, version), however many of its batches
the group holds; a resolved bucket that comes back in a newer version reopens as
regressed (audited once, naming the device whose batch brought the newest version).

A bucket ID is 64 bits of a hash of (tenant, fingerprint), and a device chooses its
fingerprint, so an ID may collide with a bucket of another tenant (or fingerprint).
Such a row is never counted into. A batch counted alone moves those records to the
tenant's bucket of that fingerprint under another ID (:func:`_rehome`); a group that
meets one raises :class:`GroupConflictError`, and the caller stores its batches one by one.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bastion.images.semver import lenient_semver_key
from bastion.service.audit.service import record
from bastion.service.errorreports.fingerprint import ALGORITHM, bucket_id
from bastion.service.errorreports.wire import Record
from bastion.service.errors import InvalidRequest
from bastion.service.models import ErrorBucket, ErrorBucketDevice, ErrorBucketVersion, ErrorBucketVersionDevice

__all__ = ["MAX_BUCKET_REHOMES", "Contribution", "GroupConflictError", "count_in", "dialect_insert", "statement", "ts"]

#: How many other IDs a bucket whose ID collides may try (each is another 64-bit hash).
MAX_BUCKET_REHOMES = 4


class GroupConflictError(Exception):
    """A group met a bucket ID that belongs to another bucket: store those batches alone."""

    def __init__(self, conflicting: frozenset[int]) -> None:
        """Args: conflicting: the indices of the contributions (or batches) whose bucket IDs collide."""
        super().__init__(f"bucket IDs collide in {len(conflicting)} of the group's batches")
        self.conflicting = conflicting


@dataclass(frozen=True)
class Contribution:
    """One batch's records per bucket, and who sent them when."""

    device_id: str
    tenant_id: str
    now: dt.datetime
    per_bucket: dict[str, list[Record]]
    #: bucket ID -> (fingerprint, title).
    titles: dict[str, tuple[str, str]]


#: Statements built once per dialect and reused (building an ON CONFLICT with ``excluded``
#: cost milliseconds per batch; the compiled form is cached by SQLAlchemy either way).
_STATEMENTS: dict[tuple[str, str], Any] = {}


def statement(session: Session, name: str, build: Callable[[str], Any]) -> Any:
    """The statement ``name`` for the session's dialect, built by ``build(dialect)`` the first time."""
    dialect = session.get_bind().dialect.name
    key = (dialect, name)
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = build(dialect)
    return found


def dialect_insert(dialect: str, model: Any) -> Any:
    """The dialect's INSERT construct (for ON CONFLICT), on the model's table."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model.__table__)


@functools.lru_cache(maxsize=4096)
def ts(seconds: int) -> dt.datetime:
    """A record time as an aware datetime (memoized: a batch repeats its few distinct times)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def count_in(session: Session, contributions: Sequence[Contribution]) -> list[dict[str, str]]:
    """Create missing buckets, lock them (one order: no deadlock), then count the contributions in them.

    Returns, per contribution, the buckets its records moved to (old ID -> new ID; only
    when counted alone, see the module docstring).

    Raises:
        GroupConflictError: more than one contribution, and a bucket ID belongs to another bucket
            (it names the contributions that hold one).
        InvalidRequest: one contribution, and every other ID of a fingerprint is taken too.
    """
    work = [c for c in contributions if c.per_bucket]
    if not work:
        return [{} for _ in contributions]
    ids = sorted({bid for c in work for bid in c.per_bucket})
    buckets = _read_or_create(session, work, ids)
    foreign = {
        (n, bid)
        for n, c in enumerate(contributions)
        for bid in c.per_bucket
        if (buckets[bid].tenant_id, buckets[bid].fingerprint) != (c.tenant_id, c.titles[bid][0])
    }
    if foreign:
        if len(contributions) > 1:
            raise GroupConflictError(frozenset(n for n, _ in foreign))
        return [_rehomed(session, contributions[0], {bid for _, bid in foreign})]
    _count(session, work, ids, buckets)
    return [{} for _ in contributions]


def _rehomed(session: Session, contribution: Contribution, foreign: set[str]) -> dict[str, str]:
    moved = {bid: _rehome(session, contribution.tenant_id, contribution.titles[bid][0]) for bid in foreign}
    again = Contribution(
        device_id=contribution.device_id,
        tenant_id=contribution.tenant_id,
        now=contribution.now,
        per_bucket={moved.get(bid, bid): records for bid, records in contribution.per_bucket.items()},
        titles={moved.get(bid, bid): title for bid, title in contribution.titles.items()},
    )
    further = count_in(session, [again])[0]
    return {bid: further.get(new, new) for bid, new in moved.items()}


def _read_or_create(session: Session, work: Sequence[Contribution], ids: list[str]) -> dict[str, Any]:
    conn = session.connection()
    lock = statement(session, "lock-buckets", lambda _: _LOCK_BUCKETS)
    create = statement(
        session, "buckets", lambda d: dialect_insert(d, ErrorBucket).on_conflict_do_nothing(index_elements=["id"])
    )
    if conn.dialect.name == "sqlite":
        # One writer at a time (writer_lock, SQLite's own lock): no row locks to order. Read the
        # buckets, and create only the missing ones (none, once a fleet's failures are known).
        buckets = {row.id: row for row in conn.execute(lock, {"ids": ids})}
        missing = [bid for bid in ids if bid not in buckets]
        if missing:
            conn.execute(create, [_new_bucket(bid, work) for bid in missing])
            buckets.update({row.id: row for row in conn.execute(lock, {"ids": missing})})
        return buckets
    # Create (DO NOTHING when a concurrent batch did), then lock every one in ID order: no
    # transaction holds a bucket lock while it waits on another's new bucket (no deadlock).
    conn.execute(create, [_new_bucket(bid, work) for bid in ids])
    return {row.id: row for row in conn.execute(lock, {"ids": ids})}


def _count(session: Session, work: Sequence[Contribution], ids: list[str], buckets: dict[str, Any]) -> None:
    """The counters of ``ids``, read under the bucket locks, with the contributions added; written back."""
    conn = session.connection()
    known_devices = _known_devices(session, work, ids)
    known_versions = _known_versions(session, work, ids)
    counted: set[tuple[str, str, str]] = set()
    device_rows: dict[tuple[str, str], dict[str, Any]] = {}
    version_rows: dict[tuple[str, str], dict[str, Any]] = {}
    totals: dict[str, dict[str, Any]] = {}
    for c in work:
        for bid, records in c.per_bucket.items():
            first = min(ts(r.first_at) for r in records)
            last_rec = max(records, key=lambda r: r.last_at)
            count = sum(r.count for r in records)
            _merge(
                device_rows,
                (bid, c.device_id),
                {"event_count": count, "first_seen": first, "last_seen": ts(last_rec.last_at)},
            )
            total = totals.setdefault(bid, {"count": 0, "devices": set(), "first": first, "last": None})
            total["count"] += count
            total["first"] = min(total["first"], first)
            if bid not in known_devices.get(c.device_id, ()):
                total["devices"].add(c.device_id)
            if total["last"] is None or last_rec.last_at >= total["last"][0]:
                total["last"] = (last_rec.last_at, last_rec.version)
            newest = total.get("newest")
            for r in records:
                key = (bid, r.version)
                row = _merge(
                    version_rows,
                    key,
                    {"event_count": r.count, "first_seen": ts(r.first_at), "last_seen": ts(r.last_at)},
                )
                if (c.device_id, bid, r.version) not in known_versions:
                    row.setdefault("new_devices", set()).add(c.device_id)
                    counted.add((c.device_id, bid, r.version))
                if newest is None or lenient_semver_key(r.version) > lenient_semver_key(newest[0]):
                    newest = (r.version, c)
                if lenient_semver_key(r.version) < lenient_semver_key(total.setdefault("lowest", r.version)):
                    total["lowest"] = r.version
            total["newest"] = newest
    bucket_rows = [_bucket_row(session, bid, buckets[bid], totals[bid]) for bid in ids]
    conn.execute(statement(session, "update-buckets", lambda _: _UPDATE_BUCKETS), bucket_rows)
    _upsert_counters(
        session,
        ErrorBucketDevice,
        [{"bucket_id": bid, "device_id": device, **row} for (bid, device), row in device_rows.items()],
        ["bucket_id", "device_id"],
        device_count=False,
    )
    _upsert_counters(
        session,
        ErrorBucketVersion,
        [
            {
                "bucket_id": bid,
                "version": version,
                "event_count": row["event_count"],
                "device_count": len(row.get("new_devices", ())),
                "first_seen": row["first_seen"],
                "last_seen": row["last_seen"],
            }
            for (bid, version), row in version_rows.items()
        ],
        ["bucket_id", "version"],
        device_count=True,
    )
    _remember_versions(session, counted)
    session.flush()  # the regressions' audit records


def _merge(rows: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str], add: dict[str, Any]) -> dict[str, Any]:
    """Add a counter row into ``rows[key]``: counts summed, first_seen min, last_seen max."""
    row = rows.get(key)
    if row is None:
        rows[key] = row = dict(add)
        return row
    row["event_count"] += add["event_count"]
    row["first_seen"] = min(row["first_seen"], add["first_seen"])
    row["last_seen"] = max(row["last_seen"], add["last_seen"])
    return row


def _bucket_row(session: Session, bid: str, bucket: Any, total: dict[str, Any]) -> dict[str, Any]:
    """The bucket's new counters and state (a regression is audited here)."""
    last_at, last_version = total["last"]
    last = ts(last_at)
    row = {
        "b_id": bid,
        "b_event_count": bucket.event_count + total["count"],
        "b_device_count": bucket.device_count + len(total["devices"]),
        "b_first_seen": min(bucket.first_seen, total["first"]),
        "b_last_seen": bucket.last_seen,
        "b_last_version": bucket.last_version,
        "b_first_version": bucket.first_version,
        "b_state": bucket.state,
        "b_regressed_at": bucket.regressed_at,
    }
    if last >= bucket.last_seen:
        row["b_last_seen"], row["b_last_version"] = last, last_version
    if lenient_semver_key(total["lowest"]) < lenient_semver_key(bucket.first_version):
        row["b_first_version"] = total["lowest"]
    newest, by = total["newest"]
    resolved = bucket.resolved_version if bucket.state == "resolved" else None
    if resolved is not None and lenient_semver_key(newest) > lenient_semver_key(resolved):
        row["b_state"], row["b_regressed_at"] = "regressed", by.now
        record(
            session,
            now=by.now,
            tenant_id=by.tenant_id,
            actor=f"device:{by.device_id}",
            action="error_report.regressed",
            target=f"bucket:{bid}",
            detail=f"resolved in {resolved}, seen again in {newest}"[:200],
        )
    return row


_BUCKETS = ErrorBucket.__table__
#: The group's buckets, locked in one order (no deadlock between two groups) and read for their counters.
_LOCK_BUCKETS = (
    select(
        _BUCKETS.c.id,
        _BUCKETS.c.tenant_id,
        _BUCKETS.c.fingerprint,
        _BUCKETS.c.state,
        _BUCKETS.c.first_seen,
        _BUCKETS.c.last_seen,
        _BUCKETS.c.event_count,
        _BUCKETS.c.device_count,
        _BUCKETS.c.first_version,
        _BUCKETS.c.last_version,
        _BUCKETS.c.resolved_version,
        _BUCKETS.c.regressed_at,
    )
    .where(_BUCKETS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_BUCKETS.c.id)
    .with_for_update()
)
#: The counters and state computed under those locks, written back (one executemany).
_UPDATE_BUCKETS = (
    update(ErrorBucket)
    .where(_BUCKETS.c.id == bindparam("b_id"))
    .values(
        event_count=bindparam("b_event_count"),
        device_count=bindparam("b_device_count"),
        first_seen=bindparam("b_first_seen"),
        last_seen=bindparam("b_last_seen"),
        last_version=bindparam("b_last_version"),
        first_version=bindparam("b_first_version"),
        state=bindparam("b_state"),
        regressed_at=bindparam("b_regressed_at"),
    )
)
_BUCKET_DEVICES = ErrorBucketDevice.__table__
_KNOWN_DEVICES = select(_BUCKET_DEVICES.c.device_id, _BUCKET_DEVICES.c.bucket_id).where(
    _BUCKET_DEVICES.c.device_id.in_(bindparam("devices", expanding=True)),
    _BUCKET_DEVICES.c.bucket_id.in_(bindparam("ids", expanding=True)),
)


def _known_devices(session: Session, work: Sequence[Contribution], ids: list[str]) -> dict[str, set[str]]:
    """Device -> the buckets of ``ids`` that already counted it (under the bucket locks)."""
    devices = sorted({c.device_id for c in work})
    known: dict[str, set[str]] = {}
    rows = session.connection().execute(
        statement(session, "known-devices", lambda _: _KNOWN_DEVICES), {"devices": devices, "ids": ids}
    )
    for device, bid in rows:
        known.setdefault(str(device), set()).add(str(bid))
    return known


_VERSION_DEVICES = ErrorBucketVersionDevice.__table__
_KNOWN_VERSIONS = select(_VERSION_DEVICES.c.device_id, _VERSION_DEVICES.c.bucket_id, _VERSION_DEVICES.c.version).where(
    _VERSION_DEVICES.c.device_id.in_(bindparam("devices", expanding=True)),
    _VERSION_DEVICES.c.bucket_id.in_(bindparam("ids", expanding=True)),
)


def _known_versions(session: Session, work: Sequence[Contribution], ids: list[str]) -> set[tuple[str, str, str]]:
    """The (device, bucket, version) triples of ``ids`` already counted (under the bucket locks).

    Read from ``error_bucket_version_devices``, not from the raw events: those are rolled
    up and deleted by retention, and a device seen again after that would count twice.
    """
    devices = sorted({c.device_id for c in work})
    rows = session.connection().execute(
        statement(session, "known-versions", lambda _: _KNOWN_VERSIONS), {"devices": devices, "ids": ids}
    )
    return {(str(d), str(b), str(v)) for d, b, v in rows}


def _remember_versions(session: Session, triples: set[tuple[str, str, str]]) -> None:
    """Record newly counted (device, bucket, version) triples (in key order: no lock-order deadlock)."""
    if not triples:
        return
    insert_ = statement(
        session,
        "version-devices",
        lambda d: dialect_insert(d, ErrorBucketVersionDevice).on_conflict_do_nothing(
            index_elements=["bucket_id", "version", "device_id"]
        ),
    )
    rows = [
        {"bucket_id": b, "version": v, "device_id": d} for d, b, v in sorted(triples, key=lambda t: (t[1], t[2], t[0]))
    ]
    session.connection().execute(insert_, rows)


def _new_bucket(bid: str, work: Sequence[Contribution]) -> dict[str, Any]:
    """A new bucket's row, with zero counters (the group's records are counted in by the UPDATE)."""
    holders = [c for c in work if bid in c.per_bucket]
    records = [r for c in holders for r in c.per_bucket[bid]]
    head, first = records[0], min(ts(r.first_at) for r in records)
    fingerprint, title = holders[0].titles[bid]
    return {
        "id": bid,
        "tenant_id": holders[0].tenant_id,
        "fingerprint": fingerprint,
        "algorithm": ALGORITHM,
        "category": head.category,
        "event_type": head.event_type,
        "component_id": head.component_id,
        "title": title,
        "state": "open",
        "first_seen": first,
        "last_seen": first,
        "event_count": 0,
        "device_count": 0,
        "first_version": min((r.version for r in records), key=lenient_semver_key),
        "last_version": head.version,
    }


def _rehome(session: Session, tenant_id: str, fp: str) -> str:
    """The ID of the tenant's bucket of ``fp`` when its first ID belongs to another bucket.

    The existing one (the unique (tenant, fingerprint) finds it), else the first free
    ``bucket_id(tenant, fp#n)``. Raises InvalidRequest when every candidate is taken too.
    """
    found = session.scalar(
        select(ErrorBucket.id).where(ErrorBucket.tenant_id == tenant_id, ErrorBucket.fingerprint == fp)
    )
    if found is not None:
        return str(found)
    for n in range(1, MAX_BUCKET_REHOMES + 1):
        candidate = bucket_id(tenant_id, f"{fp}#{n}")
        if session.get(ErrorBucket, candidate) is None:
            return candidate
    raise InvalidRequest(
        "malformed error report: the report's fingerprint collides with other buckets' IDs", code="malformed_report"
    )


def _upsert_counters(
    session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str], *, device_count: bool
) -> None:
    """INSERT the counter rows, or add to the existing ones (first_seen min, last_seen max)."""

    def build(dialect: str) -> Any:
        table = model.__table__
        statement_ = dialect_insert(dialect, model)
        least, greatest = (func.least, func.greatest) if dialect == "postgresql" else (func.min, func.max)
        values: dict[str, Any] = {
            "event_count": table.c.event_count + statement_.excluded.event_count,
            "first_seen": least(table.c.first_seen, statement_.excluded.first_seen),
            "last_seen": greatest(table.c.last_seen, statement_.excluded.last_seen),
        }
        if device_count:
            values["device_count"] = table.c.device_count + statement_.excluded.device_count
        return statement_.on_conflict_do_update(index_elements=keys, set_=values)

    session.connection().execute(statement(session, f"counters:{model.__tablename__}", build), rows)
