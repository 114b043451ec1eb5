"""Device log requests: an operator asks a device for an app's recent log; the device uploads a signed tail.

1. An admin or contributor asks (``POST /devices/{id}/log-requests``, audited);
   at most :attr:`LogRequestSettings.max_pending_per_device` are pending per
   device, and each expires after :attr:`LogRequestSettings.ttl`.
2. The device learns of it in the answer of its next error-report batch
   (:func:`pending_for`, the ``log_requests`` of the answer).
3. The device uploads the tail (``POST /device/logs``): a COSE_Sign1 by its
   certified key, verified exactly as a status report
   (:func:`bastion.service.devicestatus.service.authenticate_device`), from a
   device in good standing, for a request pending *for that device and
   component*; bounded to the request's ``max_bytes`` (at most 16 KiB). A second
   upload answers ``duplicate`` and changes nothing.

Every refusal of an upload is recorded (bounded per device and code, as the
status report's are) and changes nothing stored.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bastion.crypto.cose import cbor_loads_exact
from bastion.crypto.error_report import MAX_LOG_TEXT_BYTES, LogUpload, decode_log
from bastion.crypto.errors import MalformedInput
from bastion.service.audit.service import record, record_denied
from bastion.service.auth.service import Principal
from bastion.service.devices.service import get_device_for
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports.signed import Refuser, device_in_standing, verify_signed
from bastion.service.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from bastion.service.models import DeviceLogRequest

__all__ = [
    "DEFAULT_LOG_REQUEST_SETTINGS",
    "MAX_LOG_TEXT_BYTES",
    "LogRequestSettings",
    "LogUploaded",
    "accept_upload",
    "create_request",
    "get_request",
    "list_requests",
    "pending_for",
]

_COMPONENT = re.compile(r"[A-Za-z0-9._:-]{1,64}")
UPLOAD_ACTION = "device.log_upload"
REQUEST_ACTION = "device.log_request"


@dataclass(frozen=True)
class LogRequestSettings:
    """Bounds of log requests, by name."""

    #: Pending requests per device (a new one beyond this is refused, 409 ``too_many_log_requests``).
    max_pending_per_device: int = 4
    #: Requests kept per device, newest first (older delivered/expired ones are deleted on a new request).
    max_kept_per_device: int = 20
    #: How long a request waits for the device.
    ttl: dt.timedelta = dt.timedelta(hours=24)
    #: The text the device may upload for one request.
    max_bytes: int = MAX_LOG_TEXT_BYTES
    #: The whole upload body (COSE_Sign1 with the device certificate and the payload).
    max_upload_bytes: int = MAX_LOG_TEXT_BYTES + 8 * 1024
    #: An upload's ``iat`` may be this far ahead of the service clock.
    max_clock_ahead: dt.timedelta = dt.timedelta(minutes=10)
    #: Requests listed per device.
    list_rows: int = 50


DEFAULT_LOG_REQUEST_SETTINGS = LogRequestSettings()


def _expire(session: Session, device_id: str, now: dt.datetime) -> None:
    session.execute(
        update(DeviceLogRequest)
        .where(
            DeviceLogRequest.device_id == device_id,
            DeviceLogRequest.state == "pending",
            DeviceLogRequest.expires_at <= now,
        )
        .values(state="expired")
    )


def create_request(
    session: Session,
    who: Principal,
    device_id: str,
    *,
    component_id: str,
    now: dt.datetime,
    settings: LogRequestSettings = DEFAULT_LOG_REQUEST_SETTINGS,
) -> DeviceLogRequest:
    """Ask the device for ``component_id``'s log (the caller's role is checked by the endpoint); audited; commit.

    Raises:
        InvalidRequest: ``invalid_component`` (not 1-64 of ``[A-Za-z0-9._:-]``).
        NotFound: no such device in the caller's tenant.
        Conflict: ``too_many_log_requests`` (the device has the most pending requests it may have).
    """
    device = get_device_for(session, who, device_id, action=REQUEST_ACTION, now=now)
    if not _COMPONENT.fullmatch(component_id):
        raise InvalidRequest(
            "component_id must be 1-64 characters of letters, digits and ._:- (the app's component ID)",
            code="invalid_component",
        )
    _expire(session, device.device_id, now)
    pending = session.scalars(
        select(DeviceLogRequest.id).where(
            DeviceLogRequest.device_id == device.device_id, DeviceLogRequest.state == "pending"
        )
    ).all()
    if len(pending) >= settings.max_pending_per_device:
        record_denied(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action=REQUEST_ACTION,
            target=f"device:{device.device_id}",
            detail=f"{len(pending)} requests already pending",
        )
        raise Conflict(
            f"the device already has {len(pending)} pending log requests (at most "
            f"{settings.max_pending_per_device}); wait for its next check-in or for them to expire",
            code="too_many_log_requests",
        )
    row = DeviceLogRequest(
        id="lr" + secrets.token_hex(8),
        tenant_id=who.tenant_id,
        device_id=device.device_id,
        component_id=component_id,
        requested_by=who.actor,
        requested_at=now,
        state="pending",
        truncated=False,
        max_bytes=settings.max_bytes,
        expires_at=now + settings.ttl,
    )
    session.add(row)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action=REQUEST_ACTION,
        target=f"device:{device.device_id}",
        detail=f"log of {component_id} requested ({row.id})",
    )
    session.flush()
    # Keep the newest requests per device; the pending ones are within them (max_pending < max_kept).
    keep = select(DeviceLogRequest.id).where(DeviceLogRequest.device_id == device.device_id)
    keep = keep.order_by(DeviceLogRequest.requested_at.desc(), DeviceLogRequest.id.desc())
    kept = list(session.scalars(keep.limit(settings.max_kept_per_device)).all())
    session.execute(
        delete(DeviceLogRequest).where(
            DeviceLogRequest.device_id == device.device_id,
            DeviceLogRequest.state != "pending",
            DeviceLogRequest.id.not_in(kept),
        )
    )
    session.commit()
    return row


def list_requests(
    session: Session,
    who: Principal,
    device_id: str,
    *,
    now: dt.datetime,
    settings: LogRequestSettings = DEFAULT_LOG_REQUEST_SETTINGS,
) -> Sequence[DeviceLogRequest]:
    """The device's log requests, newest first (expired ones marked so)."""
    device = get_device_for(session, who, device_id, action="device.read", now=now)
    _expire(session, device.device_id, now)
    session.commit()
    query = (
        select(DeviceLogRequest)
        .where(DeviceLogRequest.device_id == device.device_id, DeviceLogRequest.tenant_id == who.tenant_id)
        .order_by(DeviceLogRequest.requested_at.desc(), DeviceLogRequest.id.desc())
        .limit(settings.list_rows)
    )
    return session.scalars(query).all()


def get_request(
    session: Session, who: Principal, device_id: str, request_id: str, *, now: dt.datetime
) -> DeviceLogRequest:
    """One log request of the device (with the uploaded text once delivered).

    Raises:
        NotFound: ``unknown_log_request`` (also for another device's or tenant's request).
    """
    device = get_device_for(session, who, device_id, action="device.read", now=now)
    _expire(session, device.device_id, now)
    session.commit()
    row = session.get(DeviceLogRequest, request_id[:20])
    if row is None or row.device_id != device.device_id or row.tenant_id != who.tenant_id:
        raise NotFound(f"the device has no log request {request_id[:24]!r}", code="unknown_log_request")
    return row


def pending_for(session: Session, device_id: str, *, now: dt.datetime) -> list[dict[str, Any]]:
    """The device's pending, unexpired requests for the error-report answer (read only), oldest first.

    Each is ``{"request_id", "component_id", "max_bytes"}`` (the answer's ``log_requests`` items).
    """
    query = (
        select(DeviceLogRequest.id, DeviceLogRequest.component_id, DeviceLogRequest.max_bytes)
        .where(
            DeviceLogRequest.device_id == device_id,
            DeviceLogRequest.state == "pending",
            DeviceLogRequest.expires_at > now,
        )
        .order_by(DeviceLogRequest.requested_at, DeviceLogRequest.id)
        .limit(DEFAULT_LOG_REQUEST_SETTINGS.max_pending_per_device)
    )
    return [
        {"request_id": rid, "component_id": component, "max_bytes": int(max_bytes)}
        for rid, component, max_bytes in session.execute(query).all()
    ]


# --- the device's upload ----------------------------------------------------------


@dataclass(frozen=True)
class LogUploaded:
    """The answer to an upload."""

    request_id: str
    status: str  # delivered | duplicate


def _decode(payload: bytes) -> LogUpload:
    """The upload payload, decoded by devreport's codec (:func:`bastion.crypto.error_report.decode_log`).

    Raises:
        PayloadTooLarge: ``log_too_large`` (the text is over the contract's 16 KiB).
        ValueError: anything else the codec refuses (the message says what).
    """
    try:
        return decode_log(payload)
    except MalformedInput as exc:
        # Only on the error path: tell an oversized text (413) from a malformed payload (400).
        try:
            data = cbor_loads_exact(payload)
        except MalformedInput:
            data = None
        text = data.get("text") if isinstance(data, dict) else None
        if isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) > MAX_LOG_TEXT_BYTES:
            raise PayloadTooLarge(f"a log text is at most {MAX_LOG_TEXT_BYTES} bytes", code="log_too_large") from exc
        raise ValueError(str(exc)) from exc


def _malformed(detail: str) -> InvalidRequest:
    return InvalidRequest(f"malformed log upload: {detail}", code="malformed_log")


def _verified(
    session: Session, body: bytes, refuse: Refuser, *, now: dt.datetime, settings: LogRequestSettings
) -> tuple[str, str, LogUpload]:
    """Size, COSE, certificate and signature (as a status report), payload, device standing."""
    message = verify_signed(
        session,
        body,
        refuse,
        now=now,
        max_bytes=settings.max_upload_bytes,
        too_large=lambda: PayloadTooLarge(
            f"a log upload is at most {settings.max_upload_bytes} bytes", code="log_too_large"
        ),
        malformed=_malformed,
    )
    try:
        upload = _decode(message.payload)
    except PayloadTooLarge as exc:
        refuse(exc, "text over the contract's bound")
    except ValueError as exc:
        refuse(_malformed(str(exc)), str(exc))
    device = device_in_standing(session, refuse, claimed_device_id=upload.device_id, noun="upload")
    tenant_id, cert_device = device.tenant_id, device.device_id
    if dt.datetime.fromtimestamp(upload.iat, dt.UTC) > now + settings.max_clock_ahead:
        refuse(_malformed("iat is ahead of the service clock; check the device clock"), f"iat {upload.iat}")
    return tenant_id, cert_device, upload


def accept_upload(
    session: Session,
    body: bytes,
    *,
    now: dt.datetime,
    refusals: RefusalLog,
    settings: LogRequestSettings = DEFAULT_LOG_REQUEST_SETTINGS,
) -> LogUploaded:
    """Verify a signed log upload and store its text on the pending request; commit.

    Raises:
        PayloadTooLarge: ``log_too_large`` (the body, or the text over the request's ``max_bytes``).
        InvalidRequest: ``malformed_log``.
        Forbidden: a certificate, signature or standing check (``device_mismatch``, ``unknown_device``,
            ``device_revoked``, ``certificate_revoked``, ...).
        NotFound: ``unknown_log_request`` (no such pending request for this device and component).
    """
    refuse = Refuser(session, refusals, now, kind="log_upload", action=UPLOAD_ACTION, anonymous_target="device-logs")
    tenant_id, cert_device, upload = _verified(session, body, refuse, now=now, settings=settings)
    row = session.get(DeviceLogRequest, upload.request_id[:20])
    unknown = NotFound("no such pending log request for this device", code="unknown_log_request")
    if row is None or row.device_id != cert_device or row.tenant_id != tenant_id:
        refuse(unknown, f"request {upload.request_id[:24]} is not this device's")
    if row.component_id != upload.component_id:
        refuse(unknown, f"request {row.id} is for another component")
    if row.state == "delivered":
        return LogUploaded(request_id=row.id, status="duplicate")
    if row.state != "pending" or row.expires_at <= now:
        refuse(unknown, f"request {row.id} is {'expired' if row.state == 'pending' else row.state}")
    if len(upload.text.encode("utf-8", "surrogatepass")) > row.max_bytes:
        refuse(
            PayloadTooLarge(f"this request takes at most {row.max_bytes} bytes of text", code="log_too_large"),
            f"request {row.id}: text over max_bytes",
        )
    text = (
        upload.text
        if upload.text.isprintable()
        else "".join(c if c.isprintable() or c in "\n\t" else "?" for c in upload.text)
    )
    # The state guard is in the statement: of two concurrent uploads exactly one delivers.
    stored = session.execute(
        update(DeviceLogRequest)
        .where(DeviceLogRequest.id == row.id, DeviceLogRequest.state == "pending")
        .values(state="delivered", delivered_at=now, text=text, truncated=upload.truncated)
    )
    if not getattr(stored, "rowcount", 0):
        session.rollback()
        return LogUploaded(request_id=row.id, status="duplicate")
    record(
        session,
        now=now,
        tenant_id=tenant_id,
        actor=f"device:{cert_device}",
        action=UPLOAD_ACTION,
        target=f"device:{cert_device}",
        detail=f"log of {row.component_id} delivered ({row.id}, {len(text)} characters)",
    )
    session.commit()
    return LogUploaded(request_id=row.id, status="delivered")
