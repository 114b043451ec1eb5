"""The checks every device-signed upload of this slice makes, and how a refusal is recorded.

Example:
    >>> refuse = Refuser(session, refusals, now, kind="error_report", action=ACTION, anonymous_target="error-reports")
    >>> message = verify_signed(session, body, refuse, now=now, max_bytes=64_000, too_large=..., malformed=...)
    >>> device = device_in_standing(session, refuse, claimed_device_id=batch.device_id, noun="batch")  # doctest: +SKIP

Error-report batches (:mod:`ingest`) and log uploads (:mod:`log_requests`)
make the same checks in the same order: the size bound, the COSE structure,
the certificate, signature and CRL checks of a status report
(:func:`devicestatus.service.authenticate_device`), then, once the payload is
decoded, that its ``device_id`` is the certificate's, claimed by the
certificate's tenant and not revoked. Each refusal is recorded by
:class:`Refuser` (bounded per device, kind and code by a :class:`RefusalLog`):
in the tenant's audit view once the device is authentic, service-wide before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from bastion.crypto.cose import Sign1Message, decode_sign1
from bastion.crypto.errors import CryptoError
from bastion.service.audit.service import record_denied
from bastion.service.devicestatus.service import RevokedCertificateError, authenticate_device
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errors import Forbidden, InvalidRequest, PayloadTooLarge, ServiceError
from bastion.service.models import Device

__all__ = ["Refuser", "Standing", "device_in_standing", "verify_signed"]


class Refuser:
    """Records a refusal (at most once per window per device, kind and code), then raises it."""

    def __init__(
        self, session: Session, refusals: RefusalLog, now: dt.datetime, *, kind: str, action: str, anonymous_target: str
    ) -> None:
        """Args: kind: the refusal log's key part; action: the audit action; anonymous_target: before authentication."""
        self.session, self.refusals, self.now = session, refusals, now
        self.kind, self.action, self.anonymous_target = kind, action, anonymous_target
        self.tenant_id: str | None = None
        self.device_id: str | None = None

    def __call__(self, error: ServiceError, why: str) -> NoReturn:
        """Record ``error`` (``why`` is the record's detail, never a secret), then raise it."""
        who = self.device_id or "anonymous"
        suppressed = self.refusals.admit((who, self.kind, error.code), now=self.now.timestamp())
        if suppressed is not None:
            more = f" ({suppressed} more since the last record)" if suppressed else ""
            record_denied(
                self.session,
                now=self.now,
                tenant_id=self.tenant_id,
                actor=f"device:{who}" if self.device_id else "anonymous",
                action=self.action,
                target=f"device:{who}" if self.device_id else self.anonymous_target,
                detail=f"{error.code}: {why}"[:180] + more,
            )
        raise error


def verify_signed(
    session: Session,
    body: bytes,
    refuse: Refuser,
    *,
    now: dt.datetime,
    max_bytes: int,
    too_large: Callable[[], PayloadTooLarge],
    malformed: Callable[[str], InvalidRequest],
) -> Sign1Message:
    """Size, COSE structure, certificate, signature and CRL; ``refuse`` then knows the tenant and device.

    Raises (through ``refuse``): ``too_large()``, ``malformed(...)``, and the Forbidden
    codes of :func:`authenticate_device` (``certificate_revoked`` included).
    """
    if len(body) > max_bytes:
        refuse(too_large(), f"{len(body)} bytes")
    try:
        message = decode_sign1(body, max_size=max_bytes)
    except CryptoError as exc:
        refuse(malformed("not a COSE_Sign1"), str(exc)[:120])
    revoked: RevokedCertificateError | None = None
    try:
        tenant_id, cert_device = authenticate_device(session, message, now=now)
    except RevokedCertificateError as exc:  # authentic, then refused: recorded in the tenant's view
        revoked, tenant_id, cert_device = exc, exc.tenant_id, exc.device_id
    except InvalidRequest as exc:
        refuse(malformed(exc.detail.removeprefix("malformed status report: ")), exc.code)
    except Forbidden as exc:
        refuse(exc, exc.detail[:120])
    refuse.tenant_id, refuse.device_id = tenant_id, cert_device
    if revoked is not None:
        refuse(revoked, "certificate on the CRL")
    return message


@dataclass(frozen=True)
class Standing:
    """The service's record of a device in good standing (plain values: a refusal's rollback expires ORM objects)."""

    device_id: str
    tenant_id: str
    #: The device's group on record (never what a payload claims).
    group_id: str | None


_DEVICES = Device.__table__.c
#: One prebuilt Core statement: it runs for every batch and upload.
_STANDING = select(_DEVICES.device_id, _DEVICES.tenant_id, _DEVICES.group_id, _DEVICES.revoked_at).where(
    _DEVICES.device_id == bindparam("device_id")
)


def device_in_standing(session: Session, refuse: Refuser, *, claimed_device_id: str, noun: str) -> Standing:
    """The certificate's device, when the payload names it, its tenant claims it and it is not revoked.

    Raises (through ``refuse``): Forbidden ``device_mismatch``, ``unknown_device``, ``device_revoked``.
    """
    if refuse.device_id is None or claimed_device_id != refuse.device_id:
        refuse(
            Forbidden(f"the {noun}'s device_id is not the certificate's device", code="device_mismatch"),
            "device_id differs from the certificate",
        )
    device = session.connection().execute(_STANDING, {"device_id": refuse.device_id}).first()
    if device is None or device.tenant_id != refuse.tenant_id:
        refuse(Forbidden("the device is not claimed by the certificate's tenant", code="unknown_device"), "not claimed")
    if device.revoked_at is not None:
        refuse(Forbidden("the device is revoked", code="device_revoked"), "device revoked")
    return Standing(device_id=str(device.device_id), tenant_id=str(device.tenant_id), group_id=device.group_id)
