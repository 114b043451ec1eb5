"""Queries of the attestation slice: SQLAlchemy Core statements, the writes run on the DBAPI cursor.

Attestation is the service's hot path, so nothing here uses the ORM (no
Session, no unit of work), and each statement is built once, at import, with
bind parameters. Reads run as Core statements on a :class:`~sqlalchemy.Connection`.

The write transaction runs in a :class:`WriteTransaction`: the same Core
statements, compiled once per dialect by SQLAlchemy (so the SQL still comes
from the models), executed on the connection's DBAPI cursor. That halves the
CPU cost of the transaction (SQLAlchemy's per-statement execution machinery
cost more than SQLite's own work); values go through the column types' bind
processors, so the stored forms are exactly what Core would store.

A write transaction starts with ``BEGIN IMMEDIATE`` on SQLite, which takes the
write lock up front, so two worker processes never both hold a read snapshot
and then deadlock upgrading it (the loser would get ``SQLITE_BUSY`` at once,
without waiting). PostgreSQL needs nothing special: row locks and the nonce's
primary key serialize what matters.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, case, delete, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.expression import ClauseElement

from bastion.service.db import SQLITE_BUSY_TIMEOUT_MS
from bastion.service.models import (
    Attestation,
    Challenge,
    Device,
    DeviceCertificate,
    GroupAppraisalPolicy,
    OsImage,
    VendorCA,
)

__all__ = [
    "DeviceStanding",
    "WriteTransaction",
    "consume_nonce",
    "device_standing",
    "device_tenant",
    "insert_attestation",
    "insert_device_certificate",
    "mark_device_failed",
    "mark_device_ok",
    "prune_consumed_nonces",
    "relaxed_rules",
    "vendor_ca_pems",
]

_challenges = cast(Table, Challenge.__table__)
_devices = cast(Table, Device.__table__)
_os_images = cast(Table, OsImage.__table__)
_attestations = cast(Table, Attestation.__table__)
_vendor_cas = cast(Table, VendorCA.__table__)
_device_certificates = cast(Table, DeviceCertificate.__table__)
_appraisal_policies = cast(Table, GroupAppraisalPolicy.__table__)

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
    select(
        _devices.c.tenant_id,
        _devices.c.revoked_at,
        _os_images.c.id,
        _os_images.c.version,
        _os_images.c.revoked_at,
        _os_images.c.security_version,
    )
    .select_from(
        _devices.outerjoin(
            _os_images,
            and_(_os_images.c.tenant_id == _devices.c.tenant_id, _os_images.c.measurement == bindparam("measurement")),
        )
    )
    .where(_devices.c.device_id == bindparam("device_id"))
)
_RELAXED_FOR_GROUP = select(_appraisal_policies.c.relaxed).where(
    _appraisal_policies.c.group_id == bindparam("group_id")
)
_RELAXED_FOR_DEVICE = select(_appraisal_policies.c.relaxed).where(
    _appraisal_policies.c.group_id
    == select(
        case(
            (_devices.c.capability_kind == "appDevelopment", _devices.c.group_before_development),
            else_=_devices.c.group_id,
        )
    )
    .where(_devices.c.device_id == bindparam("device_id"))
    .scalar_subquery()
)
_DEVICE_TENANT = select(_devices.c.tenant_id).where(_devices.c.device_id == bindparam("device_id"))
# The success update re-checks, atomically with the write, everything the
# verdict read: still claimed by this tenant, not revoked, and the OS image
# still known-good and not revoked. Zero rows updated means the standing changed.
_MARK_OK_WHERE = (
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
_MARK_OK_VALUES = {
    "last_attested_at": bindparam("b_at"),
    "last_result": "ok",
    "last_reason": "ok",
    "os_version": bindparam("b_os_version"),
    "os_measurement": bindparam("b_os_measurement"),
    "cert_serial": bindparam("b_cert_serial"),
    "cert_not_after": bindparam("b_cert_not_after"),
    "capability_id": bindparam("b_capability_id"),
    "capability_kind": bindparam("b_capability_kind"),
}
#: The device was in development mode (an UPDATE's right-hand sides see the old row).
_WAS_DEVELOPMENT = _devices.c.capability_kind == "appDevelopment"
# Not (or no longer) in development mode: a device that was goes back to the group it left.
_MARK_OK = (
    update(_devices)
    .where(*_MARK_OK_WHERE)
    .values(
        **_MARK_OK_VALUES,
        group_id=case((_WAS_DEVELOPMENT, _devices.c.group_before_development), else_=_devices.c.group_id),
        group_before_development=None,
    )
)
# In development mode: in the Development group; the group to return to is kept from the first time.
_MARK_OK_DEVELOPMENT = (
    update(_devices)
    .where(*_MARK_OK_WHERE)
    .values(
        **_MARK_OK_VALUES,
        group_id=bindparam("b_development_group_id"),
        group_before_development=case(
            (_WAS_DEVELOPMENT, _devices.c.group_before_development), else_=_devices.c.group_id
        ),
    )
)
_MARK_FAILED = (
    update(_devices)
    .where(_devices.c.device_id == bindparam("b_device_id"))
    .values(last_attested_at=bindparam("b_at"), last_result="failed", last_reason=bindparam("b_reason"))
)
_INSERT_ATTESTATION = insert(_attestations)
#: The columns an attestation record is inserted with (``id`` is generated).
_ATTESTATION_COLUMNS = (
    "at",
    "device_id",
    "tenant_id",
    "result",
    "reason",
    "detail",
    "os_version",
    "os_measurement",
    "cert_serial",
    "insecure_no_sandbox",
)

_INSERT_DEVICE_CERTIFICATE = insert(_device_certificates)
#: The columns a device certificate record is inserted with (``id`` is generated, not revoked yet).
_DEVICE_CERTIFICATE_COLUMNS = ("ca_id", "tenant_id", "device_id", "serial", "issued_at", "not_after")


@dataclass(frozen=True)
class DeviceStanding:
    """A claimed device and, if known-good for its tenant, the OS image it measured."""

    tenant_id: str
    device_revoked: bool
    os_known: bool
    os_version: str | None
    os_revoked: bool
    os_security_version: int | None = None


def vendor_ca_pems(conn: Connection) -> list[str]:
    """PEM text of every trusted vendor CA."""
    return list(conn.execute(_VENDOR_PEMS).scalars())


def device_standing(
    source: Connection | WriteTransaction, device_id: str, os_measurement: str
) -> DeviceStanding | None:
    """The device's claim and revocation, and its OS image's standing, in one query.

    Args:
        source: a connection (a read) or an open write transaction.
        device_id: the device.
        os_measurement: the measured OS image, lowercase hex.

    Returns:
        None if the device is not claimed.
    """
    params = {"device_id": device_id, "measurement": os_measurement}
    if isinstance(source, WriteTransaction):
        row = source.execute(_DEVICE_STANDING, params).fetchone()
    else:
        row = source.execute(_DEVICE_STANDING, params).first()
    if row is None:
        return None
    tenant_id, device_revoked_at, os_id, os_version, os_revoked_at, os_security_version = row
    return DeviceStanding(
        tenant_id=tenant_id,
        device_revoked=device_revoked_at is not None,
        os_known=os_id is not None,
        os_version=os_version,
        os_revoked=os_revoked_at is not None,
        os_security_version=os_security_version,
    )


def relaxed_rules(conn: Connection, device_id: str, *, development_group_id: str | None) -> list[str]:
    """The appraisal rules relaxed for the group the device is in once this attestation succeeds.

    That is ``development_group_id`` for a device attesting in development mode;
    otherwise the device's group, or for a device leaving development mode the
    group it returns to (as :func:`mark_device_ok` moves it). Read only when a
    rule failed, so a good device's attestation never pays for it.
    """
    if development_group_id is not None:
        row = conn.execute(_RELAXED_FOR_GROUP, {"group_id": development_group_id}).first()
    else:
        row = conn.execute(_RELAXED_FOR_DEVICE, {"device_id": device_id}).first()
    if row is None or not isinstance(row[0], list):
        return []
    return [name for name in row[0] if isinstance(name, str)]


class _Prepared:
    """A Core statement compiled for one dialect, with its parameter order and bind processors."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None) -> None:
        compiled: Compiled = statement.compile(dialect=dialect, column_keys=list(column_keys or ()) or None)
        self.compiled = compiled
        self.sql = compiled.string
        self.positional: list[str] | None = getattr(compiled, "positiontup", None)
        processors: dict[str, Any] = {}
        for name, bind in getattr(compiled, "binds", {}).items():
            processor = bind.type.bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        self.processors = processors

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        params = dict(self.compiled.construct_params(values) or {})
        for name, processor in self.processors.items():
            if name in params:
                params[name] = processor(params[name])
        if self.positional is not None:
            return tuple(params[name] for name in self.positional)
        return params


#: How long a writer waits for SQLite's write lock before giving up (as the busy timeout).
WRITE_LOCK_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_MS / 1000
#: Pause between attempts to take SQLite's write lock. SQLite's own busy handler
#: sleeps at least 1 ms, while a competing attestation holds the lock ~0.1 ms; with
#: two workers that granularity cost a sixth of the event loop's time.
WRITE_LOCK_RETRY_S = 0.0001


def _begin_immediate(cursor: Any) -> None:
    """``BEGIN IMMEDIATE``, retrying every :data:`WRITE_LOCK_RETRY_S` while another writer holds the lock.

    pysqlite (legacy transaction control) issues no BEGIN of its own once one
    is open, and ends it on ``commit()``/``rollback()``. The connection's busy
    timeout is lifted for the attempts and restored at once (WAL-mode
    statements inside the transaction do not wait for locks).
    """
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + WRITE_LOCK_TIMEOUT_S
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(WRITE_LOCK_RETRY_S)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")


#: Compiled statements, by (dialect name, statement, column keys). Statements are module constants.
_PREPARED: dict[tuple[str, int, tuple[str, ...] | None], _Prepared] = {}


class WriteTransaction:
    """One write transaction on the DBAPI connection behind ``conn`` (see the module docstring).

    Use it as a context manager: the transaction rolls back unless
    :meth:`commit` was called. A read transaction SQLAlchemy has open on
    ``conn`` is committed (ended) first.
    """

    def __init__(self, conn: Connection) -> None:
        """Start the transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        if conn.in_transaction():
            conn.commit()
        self.dialect = conn.dialect
        dbapi: Any = conn.connection.driver_connection
        if dbapi is None:  # pragma: no cover - a checked-out connection always has one
            raise RuntimeError("the connection has no DBAPI connection")
        self._dbapi = dbapi
        self._cursor: Any = self._dbapi.cursor()
        self._open = True
        if self.dialect.name == "sqlite":
            _begin_immediate(self._cursor)

    def __enter__(self) -> WriteTransaction:
        """Return the open transaction."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Roll back unless committed; close the cursor."""
        try:
            if self._open:
                self._dbapi.rollback()
        finally:
            self._cursor.close()

    def execute(
        self, statement: ClauseElement, values: dict[str, Any], column_keys: Sequence[str] | None = None
    ) -> Any:
        """Run a Core statement; return the DBAPI cursor (for ``rowcount`` / ``fetchone``)."""
        key = (self.dialect.name, id(statement), tuple(column_keys) if column_keys else None)
        prepared = _PREPARED.get(key)
        if prepared is None:
            prepared = _PREPARED[key] = _Prepared(statement, self.dialect, column_keys)
        self._cursor.execute(prepared.sql, prepared.parameters(values))
        return self._cursor

    def commit(self) -> None:
        """Commit the transaction."""
        self._dbapi.commit()
        self._open = False


def consume_nonce(tx: WriteTransaction, nonce: bytes, device_id: str, expires_at: dt.datetime) -> bool:
    """Record ``nonce`` as used; False if it already was (a replay).

    Of several concurrent transactions presenting the same nonce, exactly one
    inserts the row: the primary key serializes them.
    """
    statement = _CONSUME_NONCE_SQLITE if tx.dialect.name == "sqlite" else _CONSUME_NONCE_PG
    cursor = tx.execute(statement, {"nonce": nonce, "device_id": device_id, "expires_at": expires_at})
    return cursor.fetchone() is not None


def prune_consumed_nonces(tx: WriteTransaction, *, expired_before: dt.datetime, limit: int) -> None:
    """Delete at most ``limit`` consumed nonces that expired before ``expired_before``."""
    tx.execute(_PRUNE_NONCES, {"expired_before": expired_before, "batch": limit})


def device_tenant(tx: WriteTransaction, device_id: str) -> str | None:
    """The tenant that claimed ``device_id``, or None."""
    row = tx.execute(_DEVICE_TENANT, {"device_id": device_id}).fetchone()
    return None if row is None else cast(str, row[0])


def mark_device_ok(
    tx: WriteTransaction,
    device_id: str,
    *,
    tenant_id: str,
    at: dt.datetime,
    os_version: str,
    os_measurement: str,
    cert_serial: str,
    cert_not_after: dt.datetime,
    capability_id: str | None = None,
    capability_kind: str | None = None,
    development_group_id: str | None = None,
) -> bool:
    """Record a successful attestation on the device row, if its standing still holds.

    With ``development_group_id`` (an ``appDevelopment`` capability) the device
    moves to that group, remembering the one it leaves; without it a device
    that was in development mode returns to the group it left.

    Returns:
        False (nothing written) if the device is no longer claimed by
        ``tenant_id``, was revoked, or its OS image is no longer known-good.
    """
    cursor = tx.execute(
        _MARK_OK if development_group_id is None else _MARK_OK_DEVELOPMENT,
        {
            "b_device_id": device_id,
            "b_tenant_id": tenant_id,
            "b_at": at,
            "b_os_version": os_version,
            "b_os_measurement": os_measurement,
            "b_cert_serial": cert_serial,
            "b_cert_not_after": cert_not_after,
            "b_capability_id": capability_id,
            "b_capability_kind": capability_kind,
            **({} if development_group_id is None else {"b_development_group_id": development_group_id}),
        },
    )
    return bool(cursor.rowcount == 1)


def mark_device_failed(tx: WriteTransaction, device_id: str, *, at: dt.datetime, reason: str) -> None:
    """Record a failed attestation on the device row."""
    tx.execute(_MARK_FAILED, {"b_device_id": device_id, "b_at": at, "b_reason": reason})


def insert_attestation(tx: WriteTransaction, **values: Any) -> None:
    """Append an attestation record (every column but ``id``)."""
    tx.execute(_INSERT_ATTESTATION, values, column_keys=_ATTESTATION_COLUMNS)


def insert_device_certificate(tx: WriteTransaction, **values: Any) -> None:
    """Record an issued device certificate (``ca_id``, ``tenant_id``, ``device_id``, ``serial``,
    ``issued_at``, ``not_after``), in the attestation's own transaction, so that a revocation
    committed later finds it (ADR 0012)."""
    tx.execute(_INSERT_DEVICE_CERTIFICATE, values, column_keys=_DEVICE_CERTIFICATE_COLUMNS)
