"""Response bodies of the OS image endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

__all__ = ["OsImageOut"]


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
