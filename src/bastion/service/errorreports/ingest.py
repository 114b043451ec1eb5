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

Then, in one transaction (with the other batches of its group: :mod:`store`,
ADR 0028): the batch row (unique per device and batch ID: a replay, also a
concurrent one, answers ``duplicate`` and counts once), the raw events, the
buckets with their version and device counters (and a regression when a resolved
bucket comes back in a newer version: :mod:`bucket_counts`), and the release activity.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports.bucket_counts import ts
from bastion.service.errorreports.fingerprint import Fingerprint, bucket_id, fingerprint
from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS, ErrorReportSettings
from bastion.service.errorreports.signed import Refuser, Standing, device_in_standing, verify_signed
from bastion.service.errorreports.store import Checked, store_group
from bastion.service.errorreports.wire import Batch, Record, WireError, decode
from bastion.service.errors import InvalidRequest, PayloadTooLarge, ServiceError

__all__ = [
    "Accepted",
    "LogRequest",
    "PendingLogRequests",
    "accept_batch",
    "accept_group",
    "check_batch",
    "no_log_requests",
]

ACTION = "device.error_report"

_log = logging.getLogger(__name__)


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
    answer = accept_group(
        session, [(body, now)], refusals=refusals, settings=settings, pending_log_requests=pending_log_requests
    )[0]
    if isinstance(answer, Exception):
        raise answer
    return answer


def accept_group(
    session: Session,
    bodies: Sequence[tuple[bytes, dt.datetime]],
    *,
    refusals: RefusalLog,
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
    pending_log_requests: PendingLogRequests = no_log_requests,
) -> list[Accepted | Exception]:
    """Check each ``(body, received at)`` on its own, then store the accepted ones together (:mod:`store`).

    Returns, per body, its answer or the ServiceError that refused it (recorded as
    every refusal is). A refused batch changes nothing stored, and does not hold up
    the others; nor does one whose check failed unexpectedly (its answer is that
    exception, a 500 for it alone).
    """
    answers: dict[int, Accepted | Exception] = {}
    checked: list[tuple[int, Checked]] = []
    for n, (body, now) in enumerate(bodies):
        try:
            checked.append((n, check_batch(session, body, now=now, refusals=refusals, settings=settings)))
        except ServiceError as exc:
            answers[n] = exc
        except Exception as exc:  # noqa: BLE001 - a fault of this batch's checks (a driver's or library's error)
            _log.exception("error-report batch check failed")
            session.rollback()  # PostgreSQL: the failed statement aborted the transaction
            answers[n] = exc
    statuses = store_group(session, [item for _, item in checked], max_buckets=settings.max_buckets_per_tenant)
    for (n, item), status in zip(checked, statuses, strict=True):
        if isinstance(status, ServiceError):
            answers[n] = status
            continue
        answers[n] = Accepted(
            batch_id=item.batch.batch_id,
            status=status,
            records=len(item.batch.records),
            log_requests=pending_log_requests(session, item.device_id, item.now),
        )
    return [answers[n] for n in range(len(bodies))]


def check_batch(
    session: Session,
    body: bytes,
    *,
    now: dt.datetime,
    refusals: RefusalLog,
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
) -> Checked:
    """Checks 1 to 5 of the module docstring (each refusal recorded), then the batch's rows, bucketed.

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
    iat = dt.datetime.fromtimestamp(batch.iat, dt.UTC)
    if not now - settings.max_batch_age <= iat <= now + settings.max_clock_ahead:
        refuse(
            _malformed(
                f"iat must be within {settings.max_batch_age.days} days before and "
                f"{int(settings.max_clock_ahead.total_seconds())} s after the service clock; check the device clock"
            ),
            f"iat {batch.iat} outside its window",
        )
    return _bucketed(_clamp_times(batch, settings), device, now)


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


def _bucketed(batch: Batch, device: Standing, now: dt.datetime) -> Checked:
    """The batch's event rows and its records per bucket (fingerprinted once per distinct failure)."""
    # The service's record of the device's group, not the batch's claim: a device must not put its
    # records (and its check-ins) into another group's fleet health and rollout baseline.
    tenant_id, device_id, group_id = device.tenant_id, device.device_id, device.group_id
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
                "first_at": ts(rec.first_at),
                "last_at": ts(rec.last_at),
                "description": rec.description,
                "detail": rec.detail,
                "received_at": now,
            }
        )
    return Checked(
        tenant_id=tenant_id,
        device_id=device_id,
        group_id=group_id,
        batch=batch,
        now=now,
        events=events,
        per_bucket=per_bucket,
        titles=titles,
    )
