"""Accepting a signed error-report batch (docs/error-reports.md "Service: ingest").

The checks, in order, each refusal recorded (bounded, :class:`RefusalLog`) and
changing nothing stored:

1. size bound (``report_too_large``, 413), COSE structure (``malformed_report``);
2. the certificate chains to its tenant's CA and is valid at ``now``, the
   signature verifies under its key, and it is not on the CRL: the checks the
   status report makes, shared through :func:`devicestatus.service.authenticate_device`
   (``untrusted_certificate``, ``certificate_expired``, ``bad_signature``, ``certificate_revoked``);
3. the payload decodes (``malformed_report``);
4. ``device_id`` is the certificate's device (``device_mismatch``), claimed by the
   certificate's tenant (``unknown_device``) and not revoked (``device_revoked``);
5. ``iat`` is within ``[now - max_batch_age, now + max_clock_ahead]`` (``malformed_report``).

The records' times are then clamped into the batch's own window, and the group
stored is the service's record of the device (the batch's ``group_id`` is ignored).

Then, in one transaction: the batch row (unique per device and batch ID: a
replay, also a concurrent one, answers ``duplicate`` and counts once), the raw
events, the buckets with their version and device counters (and a regression
when a resolved bucket comes back in a newer version), and the release activity.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import String, bindparam, exists, func, insert, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.images.semver import lenient_semver_key
from bastion.service.audit.service import record
from bastion.service.db import writer_lock
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports.activity import record_activity
from bastion.service.errorreports.bucket_cap import cap_new_buckets
from bastion.service.errorreports.fingerprint import ALGORITHM, Fingerprint, bucket_id, fingerprint
from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS, ErrorReportSettings
from bastion.service.errorreports.signed import Refuser, device_in_standing, verify_signed
from bastion.service.errorreports.wire import Batch, Record, WireError, decode
from bastion.service.errors import InvalidRequest, PayloadTooLarge
from bastion.service.models import (
    Device,
    ErrorBucket,
    ErrorBucketDevice,
    ErrorBucketVersion,
    ErrorEvent,
    ErrorReportBatch,
)

__all__ = ["Accepted", "LogRequest", "PendingLogRequests", "accept_batch", "no_log_requests"]

ACTION = "device.error_report"


@dataclass(frozen=True)
class LogRequest:
    """An operator's pending request for an app log, handed to the device in the answer."""

    request_id: str
    component_id: str
    max_bytes: int


#: ``(session, device_id, now) -> pending log requests`` (from :mod:`errorreports.log_requests`).
PendingLogRequests = Callable[[Session, str, dt.datetime], list[LogRequest]]


def no_log_requests(session: Session, device_id: str, now: dt.datetime) -> list[LogRequest]:
    """No log requests (a caller that does not hand them out, e.g. a benchmark or a tool)."""
    return []


@dataclass(frozen=True)
class Accepted:
    """The answer to an accepted (or duplicate) batch."""

    batch_id: str
    status: str  # accepted | duplicate
    records: int
    log_requests: list[LogRequest]


def _malformed(detail: str) -> InvalidRequest:
    return InvalidRequest(f"malformed error report: {detail}", code="malformed_report")


def accept_batch(
    session: Session,
    body: bytes,
    *,
    now: dt.datetime,
    refusals: RefusalLog,
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
    pending_log_requests: PendingLogRequests = no_log_requests,
) -> Accepted:
    """Verify a signed batch and the device's standing, store it, commit; see the module docstring.

    Raises:
        PayloadTooLarge: ``report_too_large``.
        InvalidRequest: ``malformed_report``.
        Forbidden: a certificate, signature or standing check.
    """
    refuse = Refuser(session, refusals, now, kind="error_report", action=ACTION, anonymous_target="error-reports")
    message = verify_signed(
        session,
        body,
        refuse,
        now=now,
        max_bytes=settings.max_batch_bytes,
        too_large=lambda: PayloadTooLarge(
            f"an error-report batch is at most {settings.max_batch_bytes} bytes", code="report_too_large"
        ),
        malformed=_malformed,
    )
    try:
        batch = decode(
            message.payload,
            max_records=settings.max_records,
            max_installed=settings.max_installed,
            max_count=settings.max_count,
        )
    except WireError as exc:
        refuse(_malformed(str(exc)), str(exc))
    device = device_in_standing(session, refuse, claimed_device_id=batch.device_id, noun="batch")
    tenant_id = device.tenant_id
    iat = dt.datetime.fromtimestamp(batch.iat, dt.UTC)
    if not now - settings.max_batch_age <= iat <= now + settings.max_clock_ahead:
        refuse(
            _malformed(
                f"iat must be within {settings.max_batch_age.days} days before and "
                f"{int(settings.max_clock_ahead.total_seconds())} s after the service clock; check the device clock"
            ),
            f"iat {batch.iat} outside its window",
        )
    batch = _clamp_times(batch, settings)
    status = _store(session, device, batch, tenant_id=tenant_id, now=now, max_buckets=settings.max_buckets_per_tenant)
    log_requests = pending_log_requests(session, device.device_id, now)
    return Accepted(batch_id=batch.batch_id, status=status, records=len(batch.records), log_requests=log_requests)


def _clamp_times(batch: Batch, settings: ErrorReportSettings) -> Batch:
    """The records' times held within the batch's own window ``[iat - max_batch_age, iat + max_clock_ahead]``.

    A device's record times are its own claim: one in 1970 or in the year 6000 would
    pin a bucket's first or last seen, and a crash in every health window, for ever.
    Clamped rather than refused: a record captured before the clock was set should not
    lose the batch it travels in (a refused batch is dropped by the device).
    """
    low = batch.iat - int(settings.max_batch_age.total_seconds())
    high = batch.iat + int(settings.max_clock_ahead.total_seconds())

    def held(value: int) -> int:
        return min(max(value, low), high)

    records = tuple(
        rec
        if low <= rec.first_at and rec.last_at <= high
        else replace(rec, first_at=held(rec.first_at), last_at=held(rec.last_at))
        for rec in batch.records
    )
    return replace(batch, records=records)


#: Statements built once per dialect and reused (building an ON CONFLICT with ``excluded``
#: cost milliseconds per batch; the compiled form is cached by SQLAlchemy either way).
_STATEMENTS: dict[tuple[str, str], Any] = {}


def _statement(session: Session, name: str, build: Callable[[str], Any]) -> Any:
    dialect = session.get_bind().dialect.name
    key = (dialect, name)
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = build(dialect)
    return found


def _dialect_insert(dialect: str, model: Any) -> Any:
    """The dialect's INSERT construct (for ON CONFLICT), on the model's table."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model.__table__)


@functools.lru_cache(maxsize=4096)
def _ts(seconds: int) -> dt.datetime:
    """A record time as an aware datetime (memoized: a batch repeats its few distinct times)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _newer(version: str, than: str | None) -> bool:
    if than is None:
        return False
    return lenient_semver_key(version) > lenient_semver_key(than)


def _grouping_input(rec: Record) -> tuple[object, ...]:
    """What :func:`fingerprint` reads of a record, as a memo key (more is harmless, less would be wrong).

    That is the category, event type, component and version, the detail's exception,
    signal, capability and reason, and the frames' files and functions (not their lines).
    """
    detail = rec.detail
    frames = detail.get("frames")
    return (
        rec.category,
        rec.event_type,
        rec.component_id,
        rec.version,
        _hashable(detail.get("exception")),
        _hashable(detail.get("signal")),
        _hashable(detail.get("capability")),
        _hashable(detail.get("reason")),
        tuple((f.get("file"), f.get("function")) for f in frames) if isinstance(frames, list) else _hashable(frames),
    )


def _hashable(value: object) -> object:
    return value if value is None or isinstance(value, str | int) else repr(value)


def _store(
    session: Session, device: Device, batch: Batch, *, tenant_id: str, now: dt.datetime, max_buckets: int
) -> str:
    """Write the batch in one transaction; ``"duplicate"`` if this device already sent this batch ID.

    The rows are built first; the write transaction then holds SQLite's one write lock
    only for the statements (and this process's writers queue on :func:`writer_lock`).
    """
    # The service's record of the device's group, not the batch's claim: a device must not put its
    # records (and its check-ins) into another group's fleet health and rollout baseline.
    group_id = device.group_id
    device_id = device.device_id
    events: list[dict[str, Any]] = []
    per_bucket: dict[str, list[Record]] = {}
    titles: dict[str, tuple[str, str]] = {}
    memo: dict[tuple[object, ...], tuple[str, Fingerprint]] = {}  # a batch repeats its few failures
    for rec in batch.records:
        key = _grouping_input(rec)
        if key not in memo:
            fp = fingerprint(rec.category, rec.event_type, rec.component_id, rec.version, rec.detail)
            memo[key] = (bucket_id(tenant_id, fp.fingerprint), fp)
        bid, fp = memo[key]
        per_bucket.setdefault(bid, []).append(rec)
        titles[bid] = (fp.fingerprint, fp.title)
        events.append(
            {
                "tenant_id": tenant_id,
                "device_id": device_id,
                "batch_pk": None,
                "bucket_id": bid,
                "group_id": group_id,
                "os_version": batch.os_version,
                "component_id": rec.component_id,
                "version": rec.version,
                "category": rec.category,
                "event_class": rec.event_class,
                "event_type": rec.event_type,
                "count": rec.count,
                "first_at": _ts(rec.first_at),
                "last_at": _ts(rec.last_at),
                "description": rec.description,
                "detail": rec.detail,
                "received_at": now,
            }
        )
    installed = [(i.component_id, i.version) for i in batch.installed]
    # End the read transaction of the checks first: on SQLite (WAL) a read snapshot that another
    # writer overtook cannot become a write transaction (SQLITE_BUSY_SNAPSHOT, no busy wait); a
    # transaction that starts with the INSERT waits for the write lock instead.
    session.commit()
    with writer_lock(session.get_bind()):
        try:
            batch_insert = _statement(
                session, "batch", lambda _: insert(ErrorReportBatch).returning(ErrorReportBatch.id)
            )
            batch_pk = (
                session.connection()
                .execute(
                    batch_insert,
                    {
                        "tenant_id": tenant_id,
                        "device_id": device_id,
                        "batch_id": batch.batch_id,
                        "iat": batch.iat,
                        "received_at": now,
                        "records": len(batch.records),
                        "dropped": batch.dropped,
                    },
                )
                .scalar_one()
            )
        except IntegrityError:  # the unique (device_id, batch_id): a replay, or a concurrent copy that won
            session.rollback()
            return "duplicate"
        for event in events:
            event["batch_pk"] = batch_pk
        per_bucket, titles = cap_new_buckets(
            session,
            tenant_id,
            per_bucket,
            titles,
            events,
            max_buckets=max_buckets,
            actor=f"device:{device_id}",
            now=now,
        )
        if per_bucket:
            moved = _update_buckets(session, per_bucket, titles, tenant_id=tenant_id, device=device, now=now)
            for event in events:
                event["bucket_id"] = moved.get(event["bucket_id"], event["bucket_id"])
        if events:
            event_insert = _statement(session, "events", lambda _: insert(ErrorEvent))
            session.connection().execute(event_insert, events)  # Core executemany, not the ORM bulk path
        record_activity(
            session,
            tenant_id=tenant_id,
            device_id=device_id,
            group_id=group_id,
            os_version=batch.os_version,
            installed=installed,
            seen_at=now,
        )
        session.commit()
    return "accepted"


def _update_buckets(
    session: Session,
    per_bucket: dict[str, list[Record]],
    titles: dict[str, tuple[str, str]],
    *,
    tenant_id: str,
    device: Device,
    now: dt.datetime,
) -> dict[str, str]:
    """Create missing buckets, lock them (one order: no deadlock), then count this batch's records in them.

    A handful of set-based statements per batch, whatever its size: the new
    buckets in one INSERT .. ON CONFLICT DO NOTHING, the locks in one SELECT ..
    FOR UPDATE, the device and version counters in one upsert each.

    A bucket ID is 64 bits of a hash of (tenant, fingerprint), and a device chooses its
    fingerprint, so an ID may collide with a bucket of another tenant (or fingerprint).
    Such a row is never counted into: the records move to the tenant's bucket of that
    fingerprint under another ID (:func:`_rehome`). Returns the moves, old ID -> new ID.
    """
    ids = sorted(per_bucket)
    # Core rows, not ORM objects: the counters are read under the row locks and written back in one
    # executemany UPDATE (the ORM's identity map and flush cost more than the statements here).
    conn = session.connection()
    lock = _statement(session, "lock-buckets", lambda _: _LOCK_BUCKETS)
    create = _statement(
        session, "buckets", lambda d: _dialect_insert(d, ErrorBucket).on_conflict_do_nothing(index_elements=["id"])
    )
    if conn.dialect.name == "sqlite":
        # One writer at a time (writer_lock, SQLite's own lock): no row locks to order. Read the
        # buckets, and create only the missing ones (none, once a fleet's failures are known).
        buckets = {row.id: row for row in conn.execute(lock, {"ids": ids})}
        missing = [bid for bid in ids if bid not in buckets]
        if missing:
            conn.execute(create, [_new_bucket(bid, per_bucket[bid], titles[bid], tenant_id) for bid in missing])
            buckets.update({row.id: row for row in conn.execute(lock, {"ids": missing})})
    else:
        # Create (DO NOTHING when a concurrent batch did), then lock every one in ID order: no
        # transaction holds a bucket lock while it waits on another's new bucket (no deadlock).
        conn.execute(create, [_new_bucket(bid, per_bucket[bid], titles[bid], tenant_id) for bid in ids])
        buckets = {row.id: row for row in conn.execute(lock, {"ids": ids})}
    foreign = [bid for bid in ids if (buckets[bid].tenant_id, buckets[bid].fingerprint) != (tenant_id, titles[bid][0])]
    if foreign:
        moved = {bid: _rehome(session, tenant_id, titles[bid][0]) for bid in foreign}
        moved_per_bucket = {moved.get(bid, bid): records for bid, records in per_bucket.items()}
        moved_titles = {moved.get(bid, bid): title for bid, title in titles.items()}
        again = _update_buckets(session, moved_per_bucket, moved_titles, tenant_id=tenant_id, device=device, now=now)
        return {bid: again.get(new, new) for bid, new in moved.items()}
    # Under the bucket locks: which of these buckets (and versions) already counted this device.
    known_devices = set(
        conn.execute(
            select(ErrorBucketDevice.bucket_id).where(
                ErrorBucketDevice.device_id == device.device_id, ErrorBucketDevice.bucket_id.in_(ids)
            )
        ).scalars()
    )
    known_versions = _known_versions(session, device.device_id, per_bucket)
    device_rows, version_rows, bucket_rows = [], [], []
    for bid in ids:
        records, bucket = per_bucket[bid], buckets[bid]
        first = min(_ts(r.first_at) for r in records)
        last_rec = max(records, key=lambda r: r.last_at)
        last = _ts(last_rec.last_at)
        count = sum(r.count for r in records)
        device_rows.append(
            {
                "bucket_id": bid,
                "device_id": device.device_id,
                "event_count": count,
                "first_seen": first,
                "last_seen": last,
            }
        )
        by_version: dict[str, list[Record]] = {}
        for r in records:
            by_version.setdefault(r.version, []).append(r)
        for version, recs in by_version.items():
            version_rows.append(
                {
                    "bucket_id": bid,
                    "version": version,
                    "event_count": sum(r.count for r in recs),
                    "device_count": 0 if (bid, version) in known_versions else 1,
                    "first_seen": min(_ts(r.first_at) for r in recs),
                    "last_seen": max(_ts(r.last_at) for r in recs),
                }
            )
        row = {
            "b_id": bid,
            "b_event_count": bucket.event_count + count,
            "b_device_count": bucket.device_count + (0 if bid in known_devices else 1),
            "b_first_seen": min(bucket.first_seen, first),
            "b_last_seen": bucket.last_seen,
            "b_last_version": bucket.last_version,
            "b_first_version": bucket.first_version,
            "b_state": bucket.state,
            "b_regressed_at": bucket.regressed_at,
        }
        if last >= bucket.last_seen:
            row["b_last_seen"], row["b_last_version"] = last, last_rec.version
        lowest = min(by_version, key=lenient_semver_key)
        if lenient_semver_key(lowest) < lenient_semver_key(bucket.first_version):
            row["b_first_version"] = lowest
        newest = max(by_version, key=lenient_semver_key)
        if bucket.state == "resolved" and _newer(newest, bucket.resolved_version):
            row["b_state"], row["b_regressed_at"] = "regressed", now
            record(
                session,
                now=now,
                tenant_id=tenant_id,
                actor=f"device:{device.device_id}",
                action="error_report.regressed",
                target=f"bucket:{bid}",
                detail=f"resolved in {bucket.resolved_version}, seen again in {newest}"[:200],
            )
        bucket_rows.append(row)
    conn.execute(_statement(session, "update-buckets", lambda _: _UPDATE_BUCKETS), bucket_rows)
    _upsert_counters(session, ErrorBucketDevice, device_rows, ["bucket_id", "device_id"], device_count=False)
    _upsert_counters(session, ErrorBucketVersion, version_rows, ["bucket_id", "version"], device_count=True)
    session.flush()  # the regression's audit record
    return {}


_BUCKETS = ErrorBucket.__table__
#: The batch's buckets, locked in one order (no deadlock between two batches) and read for their counters.
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


def _known_versions(session: Session, device_id: str, per_bucket: dict[str, list[Record]]) -> set[tuple[str, str]]:
    """The (bucket, version) pairs of this batch that already have an event of this device.

    One index seek per pair (EXISTS on ``ix_error_events_device_bucket``), not a DISTINCT
    over every event the device ever sent to those buckets: that grew with its history.
    The statement for ``n`` pairs is built once (a batch has at most ``max_records``).
    """
    pairs = sorted({(bid, r.version) for bid, records in per_bucket.items() for r in records})
    if not pairs:
        return set()
    query = _statement(session, f"known-versions:{len(pairs)}", lambda _: _known_versions_query(len(pairs)))
    params: dict[str, str] = {"device": device_id}
    for n, (bid, version) in enumerate(pairs):
        params[f"b{n}"], params[f"v{n}"] = bid, version
    return {(str(b), str(v)) for b, v in session.connection().execute(query, params)}


def _known_versions_query(count: int) -> Any:
    def check(n: int) -> Any:
        bid, version = bindparam(f"b{n}", type_=String), bindparam(f"v{n}", type_=String)
        return select(bid.label("bucket_id"), version.label("version")).where(
            exists().where(
                ErrorEvent.device_id == bindparam("device"), ErrorEvent.bucket_id == bid, ErrorEvent.version == version
            )
        )

    checks = [check(n) for n in range(count)]
    return checks[0] if count == 1 else union_all(*checks)


def _new_bucket(bid: str, records: list[Record], title: tuple[str, str], tenant_id: str) -> dict[str, Any]:
    """A new bucket's row, with zero counters (the batch's records are counted in by the UPDATE)."""
    head = records[0]
    first = min(_ts(r.first_at) for r in records)
    return {
        "id": bid,
        "tenant_id": tenant_id,
        "fingerprint": title[0],
        "algorithm": ALGORITHM,
        "category": head.category,
        "event_type": head.event_type,
        "component_id": head.component_id,
        "title": title[1],
        "state": "open",
        "first_seen": first,
        "last_seen": first,
        "event_count": 0,
        "device_count": 0,
        "first_version": min((r.version for r in records), key=lenient_semver_key),
        "last_version": head.version,
    }


#: How many other IDs a bucket whose ID collides may try (each is another 64-bit hash).
MAX_BUCKET_REHOMES = 4


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
    raise _malformed("the report's fingerprint collides with other buckets' IDs")


def _upsert_counters(
    session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str], *, device_count: bool
) -> None:
    """INSERT the counter rows, or add to the existing ones (first_seen min, last_seen max)."""

    def build(dialect: str) -> Any:
        table = model.__table__
        statement = _dialect_insert(dialect, model)
        least, greatest = (func.least, func.greatest) if dialect == "postgresql" else (func.min, func.max)
        values: dict[str, Any] = {
            "event_count": table.c.event_count + statement.excluded.event_count,
            "first_seen": least(table.c.first_seen, statement.excluded.first_seen),
            "last_seen": greatest(table.c.last_seen, statement.excluded.last_seen),
        }
        if device_count:
            values["device_count"] = table.c.device_count + statement.excluded.device_count
        return statement.on_conflict_do_update(index_elements=keys, set_=values)

    session.connection().execute(_statement(session, f"counters:{model.__tablename__}", build), rows)
