"""Response and request bodies of the device endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttestationOut",
    "ClaimChallengeOut",
    "ClaimChallengeRequest",
    "ClaimRequest",
    "DeviceDetail",
    "DeviceOut",
    "OwnershipEventOut",
    "RefusedDeviceOut",
    "ReleaseRequest",
    "UpdateEventOut",
    "VoucherClaimOut",
    "VoucherClaimRequest",
]

#: Bound on the base64 text of claim evidence (a 16 KiB EAT is 21,848 characters).
MAX_EVIDENCE_B64 = 24 * 1024
#: Bound on the base64 text of a voucher (a 40 KiB voucher is 54,614 characters).
MAX_VOUCHER_B64 = 56 * 1024


class ClaimChallengeRequest(BaseModel):
    # Validated by the domain (clear detail); the bound here only caps the size.
    device_id: str = Field(max_length=200)


class ClaimChallengeOut(BaseModel):
    device_id: str
    tenant_id: str
    #: base64url (no padding): the nonce the device signs its evidence over.
    nonce: str
    expires_at: dt.datetime


class ClaimRequest(BaseModel):
    #: The device's attestation EAT over a claim challenge, base64url (padding optional).
    evidence: str | None = Field(default=None, max_length=MAX_EVIDENCE_B64)
    #: Refused: a claim by device ID alone is gone (kept so the answer can say what to do instead).
    device_id: str | None = Field(default=None, max_length=200)


class VoucherClaimRequest(BaseModel):
    #: The vendor's ownership voucher (COSE_Sign1), base64 (standard or url alphabet).
    voucher: str = Field(max_length=MAX_VOUCHER_B64)


class RefusedDeviceOut(BaseModel):
    device_id: str
    error: str
    detail: str


class ReleaseRequest(BaseModel):
    #: The tenant ID that may claim the device next.
    to_tenant: str = Field(min_length=1, max_length=64)


class OwnershipEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    device_id: str
    event: str
    tenant_id: str
    actor: str
    method: str | None
    voucher_id: str | None
    vendor_fingerprint: str | None
    to_tenant_id: str | None
    detail: str


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


class VoucherClaimOut(BaseModel):
    voucher_id: str
    claimed: list[DeviceOut]
    refused: list[RefusedDeviceOut]
