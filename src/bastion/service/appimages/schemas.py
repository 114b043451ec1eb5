"""Request and response bodies of the app-signing key and app image endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AppImageOut", "AppKeyCreate", "AppKeyOut"]


class AppKeyCreate(BaseModel):
    name: str = Field(max_length=200)
    # Bounded again by the domain (FleetLimits.max_public_key_pem_bytes) with a clear detail.
    public_key_pem: str = Field(max_length=16 * 1024)


class AppKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    key_id: str
    name: str
    public_key_pem: str
    created_at: dt.datetime
    created_by: str


class AppImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    tenant_id: str
    sha256: str
    component_id: str
    version: str
    security_version: int
    size: int
    signer_key_id: str
    uploaded_at: dt.datetime
    uploaded_by: str
