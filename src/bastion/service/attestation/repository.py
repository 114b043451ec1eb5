"""Queries of the attestation slice, as SQLAlchemy Core statements.

Attestation is the service's hot path, so these skip the ORM unit of work and
build each statement once, at import, with bind parameters: constructing and
cache-keying a statement per call costs more than running it on SQLite. Each
function runs one statement; the caller owns the transaction (one per request).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from bastion.service.models import Attestation, Challenge, Device, OsImage, VendorCA

__all__ = [
    "DeviceStanding",
    "consume_challenge",
    "device_standing",
    "device_tenant",
    "insert_attestation",
    "insert_challenge",
    "mark_device_failed",
    "mark_device_ok",
    "prune_challenges",
    "vendor_ca_pems",
]

_challenges = cast(Table, Challenge.__table__)
_devices = cast(Table, Device.__table__)
_os_images = cast(Table, OsImage.__table__)
_attestations = cast(Table, Attestation.__table__)
_vendor_cas = cast(Table, VendorCA.__table__)

_VENDOR_PEMS = select(_vendor_cas.c.cert_pem)
_INSERT_CHALLENGE = insert(_challenges)
_PRUNE_CHALLENGES = delete(_challenges).where(
    _challenges.c.nonce.in_(
        select(_challenges.c.nonce)
        .where(_challenges.c.expires_at < bindparam("expired_before"))
        .limit(bindparam("batch"))
        .scalar_subquery()
    )
)
_CONSUME_CHALLENGE = (
    delete(_challenges)
    .where(_challenges.c.nonce == bindparam("nonce"))
    .returning(_challenges.c.device_id, _challenges.c.expires_at)
)
_DEVICE_STANDING = (
    select(_devices.c.tenant_id, _devices.c.revoked_at, _os_images.c.id, _os_images.c.version, _os_images.c.revoked_at)
    .select_from(
        _devices.outerjoin(
            _os_images,
            and_(_os_images.c.tenant_id == _devices.c.tenant_id, _os_images.c.measurement == bindparam("measurement")),
        )
    )
    .where(_devices.c.device_id == bindparam("device_id"))
)
_DEVICE_TENANT = select(_devices.c.tenant_id).where(_devices.c.device_id == bindparam("device_id"))
_MARK_OK = (
    update(_devices)
    .where(_devices.c.device_id == bindparam("b_device_id"))
    .values(
        last_attested_at=bindparam("b_at"),
        last_result="ok",
        last_reason="ok",
        os_version=bindparam("b_os_version"),
        os_measurement=bindparam("b_os_measurement"),
        cert_serial=bindparam("b_cert_serial"),
        cert_not_after=bindparam("b_cert_not_after"),
    )
)
_MARK_FAILED = (
    update(_devices)
    .where(_devices.c.device_id == bindparam("b_device_id"))
    .values(last_attested_at=bindparam("b_at"), last_result="failed", last_reason=bindparam("b_reason"))
)
_INSERT_ATTESTATION = insert(_attestations)


@dataclass(frozen=True)
class DeviceStanding:
    """A claimed device and, if known-good for its tenant, the OS image it measured."""

    tenant_id: str
    device_revoked: bool
    os_known: bool
    os_version: str | None
    os_revoked: bool


def vendor_ca_pems(session: Session) -> list[str]:
    """PEM text of every trusted vendor CA."""
    return list(session.execute(_VENDOR_PEMS).scalars())


def insert_challenge(session: Session, nonce: bytes, device_id: str, expires_at: dt.datetime) -> None:
    """Store a new challenge."""
    session.execute(_INSERT_CHALLENGE, {"nonce": nonce, "device_id": device_id, "expires_at": expires_at})


def prune_challenges(session: Session, *, expired_before: dt.datetime, limit: int) -> None:
    """Delete at most ``limit`` challenges that expired before ``expired_before``."""
    session.execute(_PRUNE_CHALLENGES, {"expired_before": expired_before, "batch": limit})


def consume_challenge(session: Session, nonce: bytes) -> tuple[str, dt.datetime] | None:
    """Delete the challenge for ``nonce`` and return its (device ID, expiry), or None.

    ``DELETE ... RETURNING`` is atomic: of several concurrent transactions
    presenting the same nonce, only one gets the row.
    """
    row = session.execute(_CONSUME_CHALLENGE, {"nonce": nonce}).first()
    if row is None:
        return None
    return cast(str, row[0]), cast(dt.datetime, row[1])


def device_standing(session: Session, device_id: str, os_measurement: str) -> DeviceStanding | None:
    """The device's claim and revocation, and its OS image's standing, in one query.

    Returns:
        None if the device is not claimed.
    """
    row = session.execute(_DEVICE_STANDING, {"device_id": device_id, "measurement": os_measurement}).first()
    if row is None:
        return None
    tenant_id, device_revoked_at, os_id, os_version, os_revoked_at = row
    return DeviceStanding(
        tenant_id=tenant_id,
        device_revoked=device_revoked_at is not None,
        os_known=os_id is not None,
        os_version=os_version,
        os_revoked=os_revoked_at is not None,
    )


def device_tenant(session: Session, device_id: str) -> str | None:
    """The tenant that claimed ``device_id``, or None."""
    return cast("str | None", session.execute(_DEVICE_TENANT, {"device_id": device_id}).scalar())


def mark_device_ok(
    session: Session,
    device_id: str,
    *,
    at: dt.datetime,
    os_version: str,
    os_measurement: str,
    cert_serial: str,
    cert_not_after: dt.datetime,
) -> None:
    """Record a successful attestation on the device row."""
    session.execute(
        _MARK_OK,
        {
            "b_device_id": device_id,
            "b_at": at,
            "b_os_version": os_version,
            "b_os_measurement": os_measurement,
            "b_cert_serial": cert_serial,
            "b_cert_not_after": cert_not_after,
        },
    )


def mark_device_failed(session: Session, device_id: str, *, at: dt.datetime, reason: str) -> None:
    """Record a failed attestation on the device row."""
    session.execute(_MARK_FAILED, {"b_device_id": device_id, "b_at": at, "b_reason": reason})


def insert_attestation(session: Session, **values: Any) -> None:
    """Append an attestation record (every column but ``id``)."""
    session.execute(_INSERT_ATTESTATION, values)
