"""Fleet operations: list, show and revoke, scoped to the caller's tenant.

Claims (with proof), unclaim and release live in :mod:`bastion.service.ownership`.

Another tenant's device is reported exactly like a missing one (NotFound),
and the attempt is audited as denied.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from sqlalchemy.orm import Session

from bastion.service.audit.service import record, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.ca.revocation import revoke_device_certificates
from bastion.service.devices import repository
from bastion.service.errors import InvalidDeviceId, NotFound
from bastion.service.models import Attestation, Device

__all__ = [
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
        raise NotFound(
            f"no device {device_id} is claimed by your tenant; claim it first with 'bastion device claim --dir DEV'"
        )
    return device


def list_devices(session: Session, who: Principal, *, limit: int, offset: int = 0) -> Sequence[Device]:
    """The caller's devices."""
    return repository.list_devices(session, who.tenant_id, limit=limit, offset=offset)


def recent_attestations(session: Session, who: Principal, device_id: str, *, limit: int) -> Sequence[Attestation]:
    """The latest attestation attempts for one of the caller's devices."""
    return repository.recent_attestations(session, who.tenant_id, device_id, limit=limit)


def revoke_device(session: Session, who: Principal, device_id: str, *, now: dt.datetime) -> Device:
    """Revoke a device: it gets no more certificates, and its unexpired ones go on the CRL. Idempotent; audited; commit.

    The caller publishes the tenant's CRLs after this commit
    (:func:`bastion.service.ca.crl.publish_tenant_crls`; the CRL refresh task
    catches up if that is lost).

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: no such device in the caller's tenant.
    """
    device = get_device_for(session, who, device_id, action="device.revoke", now=now)
    already = device.revoked_at is not None
    if not already:
        device.revoked_at = now
    revoke_device_certificates(session, who.tenant_id, device_id, reason="privilege_withdrawn", now=now)
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
