"""Request and response bodies of the deployment endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from bastion.service.appimages.schemas import AppImageOut
from bastion.service.rollouts.schemas import RolloutOut, RolloutSpec

__all__ = ["DeploymentCreate", "DeploymentDetail", "DeploymentOut", "DeviceStateOut"]


class DeploymentCreate(BaseModel):
    group: str = Field(max_length=300, description='group id or "PRODUCT/GROUP"')
    images: list[str] = Field(max_length=64, description="image ids or SHA-256s")
    rollout: RolloutSpec | None = Field(
        default=None, description="stage the deployment (docs/adr/0017); omitted: the whole group at once"
    )


class DeploymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    tenant_id: str
    group_id: str
    created_at: dt.datetime
    created_by: str


class DeviceStateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    state: str
    os_version: str | None
    last_result: str | None
    last_result_at: dt.datetime | None
    reported_at: dt.datetime | None


class DeploymentDetail(DeploymentOut):
    group_name: str
    current: bool
    images: list[AppImageOut]
    counts: dict[str, int]
    complete: bool = Field(
        description="every device of the group that is not revoked reports the deployment installed "
        "(revoked devices are counted apart and never hold it back)"
    )
    devices: list[DeviceStateOut]
    rollout: RolloutOut | None = None
