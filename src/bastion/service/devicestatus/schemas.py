"""Response bodies of the device status endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

__all__ = ["DeploymentStatusOut", "StatusAccepted", "UpdateEventOut", "UpdateStatusOut"]


class UpdateEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    received_at: dt.datetime
    kind: str
    component_id: str
    version: str
    detail: str
    deployment_id: int | None


class UpdateStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    group_id: str | None
    deployment_id: int | None
    os_version: str
    boot_slot: str
    installed: list[dict[str, str]]
    last_result: str | None
    last_result_at: dt.datetime | None
    reported_at: dt.datetime


class StatusAccepted(BaseModel):
    accepted: bool
    device_id: str
    reported_at: dt.datetime


class DeploymentStatusOut(BaseModel):
    device_id: str
    group_id: str | None
    status: UpdateStatusOut | None
    history: list[UpdateEventOut]
