"""Queries of the capabilities slice. Every function takes the tenant, so no query crosses tenants."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.service.models import DeviceCapability, DeviceGroup

__all__ = ["development_group", "find_capability", "list_capabilities"]

#: The default group a device in development mode joins (service/fleet/policy.py DEFAULT_GROUPS).
DEVELOPMENT_GROUP = "Development"


def development_group(session: Session, tenant_id: str, product_id: str) -> DeviceGroup | None:
    """The product's Development group."""
    query = select(DeviceGroup).where(
        DeviceGroup.tenant_id == tenant_id,
        DeviceGroup.product_id == product_id,
        DeviceGroup.name == DEVELOPMENT_GROUP,
    )
    return session.scalar(query)


def find_capability(session: Session, tenant_id: str, device_id: str, capability_id: str) -> DeviceCapability | None:
    """One capability of one of the tenant's devices."""
    row = session.get(DeviceCapability, capability_id)
    if row is None or row.tenant_id != tenant_id or row.device_id != device_id:
        return None
    return row


def list_capabilities(session: Session, tenant_id: str, device_id: str, *, limit: int) -> Sequence[DeviceCapability]:
    """The capabilities issued for a device, newest first."""
    query = (
        select(DeviceCapability)
        .where(DeviceCapability.tenant_id == tenant_id, DeviceCapability.device_id == device_id)
        .order_by(DeviceCapability.issued_at.desc(), DeviceCapability.id)
        .limit(limit)
    )
    return session.scalars(query).all()
