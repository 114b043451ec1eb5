"""Device and attestation-record queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bastion.service.models import Attestation, Device

__all__ = ["get_device", "list_devices", "recent_attestations"]


def get_device(session: Session, device_id: str) -> Device | None:
    """The device row, whichever tenant owns it."""
    return session.get(Device, device_id)


def list_devices(session: Session, tenant_id: str, *, limit: int, offset: int = 0) -> Sequence[Device]:
    """The tenant's devices, oldest claim first."""
    query = (
        select(Device)
        .where(Device.tenant_id == tenant_id)
        .order_by(Device.claimed_at, Device.device_id)
        .limit(limit)
        .offset(offset)
    )
    return session.scalars(query).all()


def recent_attestations(session: Session, tenant_id: str, device_id: str, *, limit: int) -> Sequence[Attestation]:
    """The device's latest attestation attempts, newest first.

    Includes attempts not yet bound to a tenant (e.g. before the chain was
    verified) that name this device, but never another tenant's records.
    """
    query = (
        select(Attestation)
        .where(
            Attestation.device_id == device_id,
            or_(Attestation.tenant_id == tenant_id, Attestation.tenant_id.is_(None)),
        )
        .order_by(Attestation.at.desc(), Attestation.id.desc())
        .limit(limit)
    )
    return session.scalars(query).all()
