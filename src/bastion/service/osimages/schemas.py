"""Request and response bodies of the OS image endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from bastion.service.rollouts.schemas import RolloutSpec

__all__ = ["OsImageOut", "OsRevokeOut", "PromoteOut", "PromoteRequest"]


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
    rollout: RolloutSpec | None = Field(
        default=None, description="stage the promotion per retail group (docs/adr/0017); omitted: all at once"
    )


class PromoteOut(OsImageOut):
    """The promoted image and the staged rollouts it started (one per retail group; none without stages)."""

    rollouts: list[int] = Field(default_factory=list, description="rollout ids (GET /rollouts/{id})")


class OsRevokeOut(BaseModel):
    """The images a revocation took off (every image of the tenant with that version or measurement)."""

    revoked: list[OsImageOut]
