"""Request and response bodies of the product, device group and assignment endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from bastion.service.models import DeviceGroup, OsBlocklistClear

__all__ = [
    "AssignRequest",
    "GroupCreate",
    "GroupOut",
    "GroupUpdate",
    "MaintenanceWindow",
    "ProductCreate",
    "ProductDetail",
    "ProductOut",
]


class MaintenanceWindow(BaseModel):
    start: str = Field(max_length=20, description='"HH:MM", UTC')
    duration_minutes: int


class ProductCreate(BaseModel):
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=1000)


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    name: str
    description: str
    created_at: dt.datetime


class GroupOut(BaseModel):
    id: str
    tenant_id: str
    product_id: str
    name: str
    update_policy: str
    os_feed: str
    maintenance_window: MaintenanceWindow | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, group: DeviceGroup) -> GroupOut:
        window = (
            MaintenanceWindow(start=group.window_start, duration_minutes=group.window_minutes)
            if group.window_start is not None and group.window_minutes is not None
            else None
        )
        return cls(
            id=group.id,
            tenant_id=group.tenant_id,
            product_id=group.product_id,
            name=group.name,
            update_policy=group.update_policy,
            os_feed=group.os_feed,
            maintenance_window=window,
            created_at=group.created_at,
            updated_at=group.updated_at,
        )


class ProductDetail(ProductOut):
    groups: list[GroupOut]


class GroupCreate(BaseModel):
    product: str = Field(max_length=200, description="product id or name")
    name: str = Field(max_length=200)
    update_policy: str = Field(default="UpdateAll", max_length=40)
    os_feed: str = Field(default="retail", max_length=40)
    maintenance_window: MaintenanceWindow | None = None


class GroupUpdate(BaseModel):
    """Fields left out stay as they are; ``"maintenance_window": null`` removes the window."""

    update_policy: str | None = Field(default=None, max_length=40)
    os_feed: str | None = Field(default=None, max_length=40)
    maintenance_window: MaintenanceWindow | None = None
    name: str | None = Field(default=None, max_length=200, description="a new name (not for a default group)")


class ProductUpdate(BaseModel):
    """A rename of a product."""

    name: str = Field(max_length=200)


class AssignRequest(BaseModel):
    group: str | None = Field(max_length=300, description='group id or "PRODUCT/GROUP"; null to unassign')


class BlocklistClearCreate(BaseModel):
    """Clear a blocklisted OS image (version or measurement) for the group, or for one of its devices."""

    group: str = Field(max_length=200, description="group id or PRODUCT/GROUP")
    image: str = Field(max_length=64)
    device_id: str | None = Field(default=None, max_length=64)


class BlocklistClearOut(BaseModel):
    id: str
    group_id: str
    sha256: str
    version: str
    device_id: str | None
    created_at: dt.datetime
    created_by: str

    @classmethod
    def of(cls, clear: OsBlocklistClear) -> BlocklistClearOut:
        return cls(
            id=f"c{clear.id}",
            group_id=clear.group_id,
            sha256=clear.sha256,
            version=clear.version,
            device_id=clear.device_id,
            created_at=clear.created_at,
            created_by=clear.created_by,
        )
