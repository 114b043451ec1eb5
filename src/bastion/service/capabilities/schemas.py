"""Request and response bodies of the capability endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CapabilityIssued", "CapabilityOut", "CapabilityRequest"]


class CapabilityRequest(BaseModel):
    """``POST /devices/{device_id}/capabilities``. The domain validates each field (clear details);
    the bounds here only cap the request's size."""

    kind: str = Field(max_length=32)
    #: SubjectPublicKeyInfo PEMs of P-256 keys (appDevelopment: 1..8; fieldServicing: none).
    developer_keys: list[str] = Field(default_factory=list, max_length=16)
    #: The product whose Development group the device joins (id or name); default: its group's product.
    product: str | None = Field(default=None, max_length=100)
    #: Lifetime in days (default 30, at most 365).
    valid_days: int | None = Field(default=None, ge=1, le=100_000)


class CapabilityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    device_id: str
    tenant_id: str
    kind: str
    developer_key_ids: list[str]
    group_id: str | None
    sha256: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    issued_by: str
    revoked_at: dt.datetime | None
    revoked_by: str | None


class CapabilityIssued(CapabilityOut):
    #: The capability file, base64 (standard alphabet, padded). Install it with
    #: ``bastion device enable-development --dir DEV --file FILE``.
    capability: str
