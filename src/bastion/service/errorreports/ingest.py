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

Then, in one transaction: the batch row (unique per device and batch ID: a
replay, also a concurrent one, answers ``duplicate`` and counts once), the raw
events, the buckets with their version and device counters (and a regression
when a resolved bucket comes back in a newer version), and the release activity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import exists, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.crypto.cose import decode_sign1
from bastion.crypto.errors import CryptoError
from bastion.images.semver import lenient_semver_key
from bastion.service.audit.service import record, record_denied
from bastion.service.devicestatus.service import RevokedCertificateError, authenticate_device
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports.activity import record_activity
from bastion.service.errorreports.fingerprint import ALGORITHM, bucket_id, fingerprint
from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS, ErrorReportSettings
from bastion.service.errorreports.wire import Batch, Record, WireError, decode
from bastion.service.errors import Forbidden, InvalidRequest, PayloadTooLarge, ServiceError
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


#: ``(session, device_id) -> pending log requests`` (the health slice's ``log_requests.pending_for``).
PendingLogRequests = Callable[[Session, str], list[LogRequest]]


def no_log_requests(session: Session, device_id: str) -> list[LogRequest]:
    """No log requests (until the device-logs slice provides them)."""
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


class _Refuser:
    """Records refusals: in the tenant's audit view once the device is authentic, else service-wide."""

    def __init__(self, session: Session, refusals: RefusalLog, now: dt.datetime) -> None:
        self.session, self.refusals, self.now = session, refusals, now
        self.tenant_id: str | None = None
        self.device_id: str | None = None

    def __call__(self, error: ServiceError, why: str) -> NoReturn:
        who = self.device_id or "anonymous"
        suppressed = self.refusals.admit((who, "error_report", error.code), now=self.now.timestamp())
        if suppressed is not None:
            more = f" ({suppressed} more since the last record)" if suppressed else ""
            record_denied(
                self.session,
                now=self.now,
                tenant_id=self.tenant_id,
                actor=f"device:{who}" if self.device_id else "anonymous",
                action=ACTION,
                target=f"device:{who}" if self.device_id else "error-reports",
                detail=f"{error.code}: {why}"[:180] + more,
            )
        raise error


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
    refuse = _Refuser(session, refusals, now)
    if len(body) > settings.max_batch_bytes:
        refuse(
            PayloadTooLarge(
                f"an error-report batch is at most {settings.max_batch_bytes} bytes", code="report_too_large"
            ),
            f"{len(body)} bytes",
        )
    try:
        message = decode_sign1(body, max_size=settings.max_batch_bytes)
    except CryptoError as exc:
        refuse(_malformed("not a COSE_Sign1"), str(exc)[:120])
    revoked: RevokedCertificateError | None = None
    try:
        tenant_id, cert_device = authenticate_device(session, message, now=now)
    except RevokedCertificateError as exc:  # authentic, then refused: recorded in the tenant's view
        revoked, tenant_id, cert_device = exc, exc.tenant_id, exc.device_id
    except InvalidRequest as exc:
        refuse(_malformed(exc.detail.removeprefix("malformed status report: ")), exc.code)
    except Forbidden as exc:
        refuse(exc, exc.detail[:120])
    refuse.tenant_id, refuse.device_id = tenant_id, cert_device
    if revoked is not None:
        refuse(revoked, "certificate on the CRL")
    try:
        batch = decode(
            message.payload,
            max_records=settings.max_records,
            max_installed=settings.max_installed,
            max_count=settings.max_count,
        )
    except WireError as exc:
        refuse(_malformed(str(exc)), str(exc))
    if batch.device_id != cert_device:
        refuse(
            Forbidden("the batch's device_id is not the certificate's device", code="device_mismatch"),
            "device_id differs from the certificate",
        )
    device = session.get(Device, cert_device)
    if device is None or device.tenant_id != tenant_id:
        refuse(Forbidden("the device is not claimed by the certificate's tenant", code="unknown_device"), "not claimed")
    if device.revoked_at is not None:
        refuse(Forbidden("the device is revoked", code="device_revoked"), "device revoked")
    iat = dt.datetime.fromtimestamp(batch.iat, dt.UTC)
    if not now - settings.max_batch_age <= iat <= now + settings.max_clock_ahead:
        refuse(
            _malformed(
                f"iat must be within {settings.max_batch_age.days} days before and "
                f"{int(settings.max_clock_ahead.total_seconds())} s after the service clock; check the device clock"
            ),
            f"iat {batch.iat} outside its window",
        )
    status = _store(session, device, batch, tenant_id=tenant_id, now=now)
    log_requests = pending_log_requests(session, device.device_id)
    return Accepted(batch_id=batch.batch_id, status=status, records=len(batch.records), log_requests=log_requests)


def _insert_ignore(session: Session, model: Any, values: dict[str, Any], keys: list[str]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if the row was inserted."""
    dialect = session.get_bind().dialect.name
    table = model.__table__
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
    else:
        statement = sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def _ts(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _newer(version: str, than: str | None) -> bool:
    if than is None:
        return False
    return lenient_semver_key(version) > lenient_semver_key(than)


def _store(session: Session, device: Device, batch: Batch, *, tenant_id: str, now: dt.datetime) -> str:
    """Write the batch in one transaction; ``"duplicate"`` if this device already sent this batch ID."""
    try:
        batch_pk = session.execute(
            insert(ErrorReportBatch)
            .values(
                tenant_id=tenant_id,
                device_id=device.device_id,
                batch_id=batch.batch_id,
                iat=batch.iat,
                received_at=now,
                records=len(batch.records),
                dropped=batch.dropped,
            )
            .returning(ErrorReportBatch.id)
        ).scalar_one()
    except IntegrityError:  # the unique (device_id, batch_id): a replay, or a concurrent copy that won
        session.rollback()
        return "duplicate"
    group_id = batch.group_id if batch.group_id is not None else device.group_id
    events: list[dict[str, Any]] = []
    per_bucket: dict[str, list[Record]] = {}
    titles: dict[str, tuple[str, str]] = {}
    for rec in batch.records:
        fp = fingerprint(rec.category, rec.event_type, rec.component_id, rec.version, rec.detail)
        bid = bucket_id(tenant_id, fp.fingerprint)
        per_bucket.setdefault(bid, []).append(rec)
        titles[bid] = (fp.fingerprint, fp.title)
        events.append(
            {
                "tenant_id": tenant_id,
                "device_id": device.device_id,
                "batch_pk": batch_pk,
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
    for bid in sorted(per_bucket):  # one lock order, so two batches never deadlock
        fp_hex, title = titles[bid]
        _update_bucket(session, bid, fp_hex, title, per_bucket[bid], tenant_id=tenant_id, device=device, now=now)
    if events:
        session.execute(insert(ErrorEvent), events)
    record_activity(
        session,
        tenant_id=tenant_id,
        device_id=device.device_id,
        group_id=group_id,
        os_version=batch.os_version,
        installed=[(i.component_id, i.version) for i in batch.installed],
        seen_at=now,
    )
    session.commit()
    return "accepted"


def _update_bucket(
    session: Session,
    bid: str,
    fp_hex: str,
    title: str,
    records: list[Record],
    *,
    tenant_id: str,
    device: Device,
    now: dt.datetime,
) -> None:
    first = min(_ts(r.first_at) for r in records)
    last_rec = max(records, key=lambda r: r.last_at)
    last = _ts(last_rec.last_at)
    head = records[0]
    _insert_ignore(
        session,
        ErrorBucket,
        {
            "id": bid,
            "tenant_id": tenant_id,
            "fingerprint": fp_hex,
            "algorithm": ALGORITHM,
            "category": head.category,
            "event_type": head.event_type,
            "component_id": head.component_id,
            "title": title,
            "state": "open",
            "first_seen": first,
            "last_seen": last,
            "event_count": 0,
            "device_count": 0,
            "first_version": head.version,
            "last_version": last_rec.version,
        },
        ["id"],
    )
    bucket = session.scalars(
        select(ErrorBucket).where(ErrorBucket.id == bid).with_for_update().execution_options(populate_existing=True)
    ).one()
    count = sum(r.count for r in records)
    if _insert_ignore(
        session,
        ErrorBucketDevice,
        {"bucket_id": bid, "device_id": device.device_id, "event_count": 0, "first_seen": first, "last_seen": last},
        ["bucket_id", "device_id"],
    ):
        bucket.device_count += 1
    row = session.get(ErrorBucketDevice, (bid, device.device_id), populate_existing=True)
    if row is not None:
        row.event_count += count
        row.first_seen, row.last_seen = min(row.first_seen, first), max(row.last_seen, last)
    by_version: dict[str, list[Record]] = {}
    for r in records:
        by_version.setdefault(r.version, []).append(r)
    for version, recs in by_version.items():
        v_first, v_last = min(_ts(r.first_at) for r in recs), max(_ts(r.last_at) for r in recs)
        _insert_ignore(
            session,
            ErrorBucketVersion,
            {
                "bucket_id": bid,
                "version": version,
                "event_count": 0,
                "device_count": 0,
                "first_seen": v_first,
                "last_seen": v_last,
            },
            ["bucket_id", "version"],
        )
        seen_before = session.scalar(
            select(
                exists().where(
                    ErrorEvent.bucket_id == bid, ErrorEvent.device_id == device.device_id, ErrorEvent.version == version
                )
            )
        )
        v_row = session.get(ErrorBucketVersion, (bid, version), populate_existing=True)
        if v_row is not None:
            v_row.event_count += sum(r.count for r in recs)
            v_row.device_count += 0 if seen_before else 1
            v_row.first_seen, v_row.last_seen = min(v_row.first_seen, v_first), max(v_row.last_seen, v_last)
    bucket.event_count += count
    bucket.first_seen = min(bucket.first_seen, first)
    if last >= bucket.last_seen:
        bucket.last_seen, bucket.last_version = last, last_rec.version
    if lenient_semver_key(head.version) < lenient_semver_key(bucket.first_version):
        bucket.first_version = head.version
    newest = max((r.version for r in records), key=lenient_semver_key)
    if bucket.state == "resolved" and _newer(newest, bucket.resolved_version):
        bucket.state, bucket.regressed_at = "regressed", now
        record(
            session,
            now=now,
            tenant_id=tenant_id,
            actor=f"device:{device.device_id}",
            action="error_report.regressed",
            target=f"bucket:{bid}",
            detail=f"resolved in {bucket.resolved_version}, seen again in {newest}"[:200],
        )
