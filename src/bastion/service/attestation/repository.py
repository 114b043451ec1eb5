"""Queries of the attestation slice, as SQLAlchemy Core statements on a plain Connection.

Attestation is the service's hot path, so these skip the ORM (no Session, no
unit of work) and build each statement once, at import, with bind parameters:
constructing and cache-keying a statement per call costs more than running it
on SQLite. Each function runs one statement; the caller owns the transaction.

Write transactions start with :func:`begin_write`: on SQLite that is
``BEGIN IMMEDIATE``, which takes the write lock up front, so two worker
processes never both hold a read snapshot and then deadlock upgrading it (the
loser would get ``SQLITE_BUSY`` at once, without waiting). PostgreSQL needs
nothing special: row locks and the nonce's primary key serialize what matters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, delete, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bastion.service.models import Attestation, Challenge, Device, OsImage, VendorCA

__all__ = [
    "DeviceStanding",
    "begin_write",
    "consume_nonce",
    "device_standing",
    "device_tenant",
    "insert_attestation",
    "mark_device_failed",
    "mark_device_ok",
    "prune_consumed_nonces",
    "vendor_ca_pems",
]

_challenges = cast(Table, Challenge.__table__)
_devices = cast(Table, Device.__table__)
_os_images = cast(Table, OsImage.__table__)
_attestations = cast(Table, Attestation.__table__)
_vendor_cas = cast(Table, VendorCA.__table__)

_VENDOR_PEMS = select(_vendor_cas.c.cert_pem)
# INSERT ... ON CONFLICT (nonce) DO NOTHING RETURNING nonce: a conflict is a
# replay, seen as no returned row (the row count of such an insert is not
# reliable across drivers), and leaves the transaction usable for the failure record.
_CONSUME_NONCE_SQLITE = (
    sqlite.insert(_challenges)
    .on_conflict_do_nothing(index_elements=[_challenges.c.nonce])
    .returning(_challenges.c.nonce)
)
_CONSUME_NONCE_PG = (
    postgresql.insert(_challenges)
    .on_conflict_do_nothing(index_elements=[_challenges.c.nonce])
    .returning(_challenges.c.nonce)
)
_PRUNE_NONCES = delete(_challenges).where(
    _challenges.c.nonce.in_(
        select(_challenges.c.nonce)
        .where(_challenges.c.expires_at < bindparam("expired_before"))
        .limit(bindparam("batch"))
        .scalar_subquery()
    )
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
# The success update re-checks, atomically with the write, everything the
# verdict read: still claimed by this tenant, not revoked, and the OS image
# still known-good and not revoked. Zero rows updated means the standing changed.
_MARK_OK = (
    update(_devices)
    .where(
        _devices.c.device_id == bindparam("b_device_id"),
        _devices.c.tenant_id == bindparam("b_tenant_id"),
        _devices.c.revoked_at.is_(None),
        exists()
        .where(
            _os_images.c.tenant_id == bindparam("b_tenant_id"),
            _os_images.c.measurement == bindparam("b_os_measurement"),
            _os_images.c.revoked_at.is_(None),
        )
        .correlate_except(_os_images),
    )
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


def begin_write(conn: Connection) -> None:
    """Start a write transaction (``BEGIN IMMEDIATE`` on SQLite; see the module docstring).

    The connection must not be in a transaction yet.
    """
    if conn.dialect.name == "sqlite":
        # pysqlite (legacy transaction control) issues no BEGIN of its own once
        # one is open, and commits it on ``conn.commit()``.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def vendor_ca_pems(conn: Connection) -> list[str]:
    """PEM text of every trusted vendor CA."""
    return list(conn.execute(_VENDOR_PEMS).scalars())


def consume_nonce(conn: Connection, nonce: bytes, device_id: str, expires_at: dt.datetime) -> bool:
    """Record ``nonce`` as used; False if it already was (a replay).

    Of several concurrent transactions presenting the same nonce, exactly one
    inserts the row: the primary key serializes them.
    """
    statement = _CONSUME_NONCE_SQLITE if conn.dialect.name == "sqlite" else _CONSUME_NONCE_PG
    result = conn.execute(statement, {"nonce": nonce, "device_id": device_id, "expires_at": expires_at})
    return result.first() is not None


def prune_consumed_nonces(conn: Connection, *, expired_before: dt.datetime, limit: int) -> None:
    """Delete at most ``limit`` consumed nonces that expired before ``expired_before``."""
    conn.execute(_PRUNE_NONCES, {"expired_before": expired_before, "batch": limit})


def device_standing(conn: Connection, device_id: str, os_measurement: str) -> DeviceStanding | None:
    """The device's claim and revocation, and its OS image's standing, in one query.

    Returns:
        None if the device is not claimed.
    """
    row = conn.execute(_DEVICE_STANDING, {"device_id": device_id, "measurement": os_measurement}).first()
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


def device_tenant(conn: Connection, device_id: str) -> str | None:
    """The tenant that claimed ``device_id``, or None."""
    return cast("str | None", conn.execute(_DEVICE_TENANT, {"device_id": device_id}).scalar())


def mark_device_ok(
    conn: Connection,
    device_id: str,
    *,
    tenant_id: str,
    at: dt.datetime,
    os_version: str,
    os_measurement: str,
    cert_serial: str,
    cert_not_after: dt.datetime,
) -> bool:
    """Record a successful attestation on the device row, if its standing still holds.

    Returns:
        False (nothing written) if the device is no longer claimed by
        ``tenant_id``, was revoked, or its OS image is no longer known-good.
    """
    result = conn.execute(
        _MARK_OK,
        {
            "b_device_id": device_id,
            "b_tenant_id": tenant_id,
            "b_at": at,
            "b_os_version": os_version,
            "b_os_measurement": os_measurement,
            "b_cert_serial": cert_serial,
            "b_cert_not_after": cert_not_after,
        },
    )
    return result.rowcount == 1


def mark_device_failed(conn: Connection, device_id: str, *, at: dt.datetime, reason: str) -> None:
    """Record a failed attestation on the device row."""
    conn.execute(_MARK_FAILED, {"b_device_id": device_id, "b_at": at, "b_reason": reason})


def insert_attestation(conn: Connection, **values: Any) -> None:
    """Append an attestation record (every column but ``id``)."""
    conn.execute(_INSERT_ATTESTATION, values)
