"""Response and request bodies of the device endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AttestationOut", "ClaimRequest", "DeviceDetail", "DeviceOut", "UpdateEventOut"]


class ClaimRequest(BaseModel):
    # Validated by the domain (clear detail); the bound here only caps the size.
    device_id: str = Field(max_length=200)


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    tenant_id: str
    claimed_at: dt.datetime
    claimed_by: str
    revoked_at: dt.datetime | None
    last_attested_at: dt.datetime | None
    last_result: str | None
    last_reason: str | None
    os_version: str | None
    os_measurement: str | None
    cert_serial: str | None
    cert_not_after: dt.datetime | None
    group_id: str | None = None
    #: The device last attested with an appDevelopment capability (in its product's Development group).
    development_mode: bool = False
    #: The device capability it last attested with (appDevelopment or fieldServicing), if any.
    capability_id: str | None = None
    capability_kind: str | None = None


class AttestationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    result: str
    reason: str
    detail: str
    os_version: str | None
    os_measurement: str | None
    cert_serial: str | None
    #: The device claimed it runs without sandboxes; None: the evidence was not read.
    insecure_no_sandbox: bool | None = None


class UpdateEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    kind: str
    component_id: str
    version: str
    detail: str
    deployment_id: int | None


class DeviceDetail(DeviceOut):
    attestations: list[AttestationOut]
    #: The device's reported update events, newest first.
    update_history: list[UpdateEventOut] = []
