"""Response bodies of the audit endpoint."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

__all__ = ["AuditEventOut"]


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: dt.datetime
    tenant_id: str | None
    actor: str
    action: str
    target: str
    outcome: str
    detail: str
