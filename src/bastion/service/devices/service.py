"""Fleet operations: claim, list, show and revoke, scoped to the caller's tenant.

Another tenant's device is reported exactly like a missing one (NotFound),
and the attempt is audited as denied.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.service.audit.service import record, record_denied, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.devices import repository
from bastion.service.errors import AlreadyClaimed, InvalidDeviceId, NotFound
from bastion.service.models import Attestation, Device

__all__ = [
    "claim_device",
    "get_device_for",
    "list_devices",
    "recent_attestations",
    "revoke_device",
    "validate_device_id",
]

_DEVICE_ID_RE = re.compile(r"[0-9a-f]{64}")


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is 64 lowercase hex characters.

    Raises:
        InvalidDeviceId: otherwise; the detail says what a device ID is.
    """
    if not _DEVICE_ID_RE.fullmatch(device_id):
        raise InvalidDeviceId(
            "a device ID is 64 lowercase hex characters (the SHA-256 of the DeviceID public key); "
            f"got {len(device_id)} character(s)"
            + ("" if device_id == device_id.lower() else ", some of them uppercase")
        )
    return device_id


def claim_device(session: Session, who: Principal, device_id: str, *, now: dt.datetime) -> Device:
    """Claim a device for the caller's tenant, once, audited; commit.

    Raises:
        InvalidDeviceId: malformed device ID.
        AlreadyClaimed: any tenant has claimed it already.
    """
    validate_device_id(device_id)
    existing = repository.get_device(session, device_id)
    if existing is not None:
        _deny_claim(session, who, device_id, existing, now=now)
    device = Device(device_id=device_id, tenant_id=who.tenant_id, claimed_at=now, claimed_by=who.actor)
    session.add(device)
    record(
        session, now=now, tenant_id=who.tenant_id, actor=who.actor, action="device.claim", target=f"device:{device_id}"
    )
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent claim won the race
        session.rollback()
        existing = repository.get_device(session, device_id)
        if existing is None:
            raise
        _deny_claim(session, who, device_id, existing, now=now, cause=exc)
    return device


def _deny_claim(
    session: Session,
    who: Principal,
    device_id: str,
    existing: Device,
    *,
    now: dt.datetime,
    cause: Exception | None = None,
) -> None:
    mine = existing.tenant_id == who.tenant_id
    record_denied(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="device.claim",
        target=f"device:{device_id}",
        detail="already claimed by this tenant" if mine else "already claimed by another tenant",
    )
    where = "by your tenant" if mine else "by another tenant"
    raise AlreadyClaimed(f"device {device_id} is already claimed {where}; a device can be claimed only once") from cause


def get_device_for(session: Session, who: Principal, device_id: str, *, action: str, now: dt.datetime) -> Device:
    """Return the caller's device, or raise NotFound (auditing cross-tenant attempts).

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: no such device in the caller's tenant.
    """
    validate_device_id(device_id)
    device = repository.get_device(session, device_id)
    if device is None or device.tenant_id != who.tenant_id:
        # The same record and answer whether the device is missing or another tenant's.
        record_not_found(
            session, now=now, tenant_id=who.tenant_id, actor=who.actor, action=action, target=f"device:{device_id}"
        )
        raise NotFound(f"no device {device_id} is claimed by your tenant; claim it first with 'bastion device claim'")
    return device


def list_devices(session: Session, who: Principal, *, limit: int, offset: int = 0) -> Sequence[Device]:
    """The caller's devices."""
    return repository.list_devices(session, who.tenant_id, limit=limit, offset=offset)


def recent_attestations(session: Session, who: Principal, device_id: str, *, limit: int) -> Sequence[Attestation]:
    """The latest attestation attempts for one of the caller's devices."""
    return repository.recent_attestations(session, who.tenant_id, device_id, limit=limit)


def revoke_device(session: Session, who: Principal, device_id: str, *, now: dt.datetime) -> Device:
    """Revoke a device: it gets no more certificates. Idempotent; audited; commit.

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: no such device in the caller's tenant.
    """
    device = get_device_for(session, who, device_id, action="device.revoke", now=now)
    already = device.revoked_at is not None
    if not already:
        device.revoked_at = now
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="device.revoke",
        target=f"device:{device_id}",
        detail="already revoked" if already else "",
    )
    session.commit()
    return device
