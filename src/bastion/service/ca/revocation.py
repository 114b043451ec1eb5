"""Device certificate revocation: put a device's unexpired certificates on its CA's CRL.

A certificate is revoked by marking its ``device_certificates`` row; the CRL is
derived from those rows (:mod:`bastion.service.ca.crl`) after the caller
commits. Only unexpired certificates are marked: an expired one is refused by
every relying party already, and RFC 5280 5.1.2.6 lets a CRL leave it off.

Example (devices slice, inside the revoking transaction)::

    revoke_device_certificates(session, tenant_id, device_id, reason="privilege_withdrawn", now=now)
    session.commit()
    publish_tenant_crls(session, tenant_id, master_key=settings.master_key, now=now)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import CursorResult, bindparam, select, update
from sqlalchemy.orm import Session

from bastion.crypto.crl import REASONS, RevokedEntry
from bastion.service.errors import InvalidRequest
from bastion.service.models import DeviceCertificate

__all__ = ["certificate_revoked", "device_certificates", "revoke_device_certificates", "revoked_entries"]


def revoke_device_certificates(
    session: Session, tenant_id: str, device_id: str, *, reason: str, now: dt.datetime
) -> int:
    """Mark every unexpired, unrevoked certificate the tenant's CAs issued to ``device_id``; no commit.

    Args:
        session: the caller's session (it commits with its own change).
        tenant_id: the tenant whose certificates are revoked (never another tenant's).
        device_id: the device.
        reason: a key of :data:`bastion.crypto.crl.REASONS`, e.g. ``privilege_withdrawn``
            (the tenant revoked the device) or ``affiliation_changed`` (unclaimed).
        now: the revocation time; certificates expired by then are left alone.

    Returns:
        How many certificates were marked.

    Raises:
        InvalidRequest: an unknown reason.
    """
    if reason not in REASONS:
        raise InvalidRequest(f"unknown revocation reason {reason!r}; use one of {', '.join(sorted(REASONS))}")
    result = session.execute(
        update(DeviceCertificate)
        .where(
            DeviceCertificate.tenant_id == tenant_id,
            DeviceCertificate.device_id == device_id,
            DeviceCertificate.revoked_at.is_(None),
            DeviceCertificate.not_after > now,
        )
        .values(revoked_at=now, revocation_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def revoked_entries(session: Session, ca_id: int, *, now: dt.datetime, limit: int) -> list[RevokedEntry]:
    """The CRL entries of one CA at ``now``: its revoked certificates that have not expired.

    At most ``limit`` (the caller passes one more than a CRL may hold, to notice an overflow).
    """
    rows = session.execute(
        select(DeviceCertificate.serial, DeviceCertificate.revoked_at, DeviceCertificate.revocation_reason)
        .where(
            DeviceCertificate.ca_id == ca_id,
            DeviceCertificate.revoked_at.is_not(None),
            DeviceCertificate.not_after > now,
        )
        .order_by(DeviceCertificate.id)
        .limit(limit)
    ).all()
    return [
        RevokedEntry(int(serial, 16), revoked_at, reason or "unspecified")
        for serial, revoked_at, reason in rows
        if revoked_at is not None
    ]


def device_certificates(
    session: Session, tenant_id: str, *, device_id: str | None, limit: int, offset: int
) -> Sequence[DeviceCertificate]:
    """The tenant's issued certificates (optionally one device's), newest first."""
    query = select(DeviceCertificate).where(DeviceCertificate.tenant_id == tenant_id)
    if device_id is not None:
        query = query.where(DeviceCertificate.device_id == device_id)
    return session.scalars(query.order_by(DeviceCertificate.id.desc()).limit(limit).offset(offset)).all()


def certificate_revoked(session: Session, device_id: str, serial_number: int) -> bool:
    """Whether the certificate with this serial, issued to ``device_id``, has been revoked.

    A certificate not on record (issued before certificates were recorded) counts as not revoked.
    """
    found = session.connection().execute(_REVOKED_AT, {"device_id": device_id, "serial": format(serial_number, "x")})
    return found.scalar() is not None


_CERTS = DeviceCertificate.__table__.c
#: One prebuilt Core statement: it runs for every device-signed request.
_REVOKED_AT = (
    select(_CERTS.revoked_at)
    .where(_CERTS.device_id == bindparam("device_id"), _CERTS.serial == bindparam("serial"))
    .limit(1)
)
