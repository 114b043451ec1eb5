"""HTTP endpoint: ``GET /audit`` (admin; newest first)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from bastion.service.audit.schemas import AuditEventOut
from bastion.service.audit.service import list_events
from bastion.service.auth.deps import AdminDep
from bastion.service.web import SessionDep, SettingsDep

router = APIRouter(tags=["audit"])


@router.get("/audit")
def get_audit(
    who: AdminDep, session: SessionDep, settings: SettingsDep, limit: Annotated[int | None, Query(ge=1)] = None
) -> list[AuditEventOut]:
    bound = settings.limits.audit_page(limit)
    return [AuditEventOut.model_validate(e) for e in list_events(session, who.tenant_id, limit=bound)]
