"""Request and response bodies of the OS image endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OsImageOut", "OsRevokeOut", "PromoteRequest"]


class OsImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    tenant_id: str
    measurement: str
    component_id: str
    version: str
    security_version: int
    size: int
    published_at: dt.datetime
    revoked_at: dt.datetime | None
    feed: str
    promoted_at: dt.datetime | None
    signer_key_id: str | None = None
    revoked_by: str | None = None


class PromoteRequest(BaseModel):
    image: str = Field(max_length=100, description="version or measurement (hex SHA-256)")


class OsRevokeOut(BaseModel):
    """The images a revocation took off (every image of the tenant with that version or measurement)."""

    revoked: list[OsImageOut]
