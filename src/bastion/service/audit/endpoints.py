"""HTTP endpoint: ``GET /audit`` (admin; newest first, in pages)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.service.audit.schemas import AuditEventOut
from bastion.service.audit.service import list_events
from bastion.service.auth.deps import AdminDep
from bastion.service.web import LimitQuery, OffsetQuery, SessionDep, SettingsDep

__all__ = ["NEXT_OFFSET_HEADER", "router"]

#: Set on a page that is cut: the ``offset`` of the next page.
NEXT_OFFSET_HEADER = "X-Next-Offset"

router = APIRouter(tags=["audit"])


_NEXT_OFFSET_DOC = {
    "description": "the offset of the next page; absent on the last page",
    "schema": {"type": "integer", "minimum": 1},
}


@router.get("/audit", responses={200: {"headers": {NEXT_OFFSET_HEADER: _NEXT_OFFSET_DOC}}})
def get_audit(
    who: AdminDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    limit: LimitQuery = None,
    offset: OffsetQuery = 0,
) -> list[AuditEventOut]:
    """The tenant's audit events, newest first: ``limit`` of them after ``offset``.

    When more events follow, the ``X-Next-Offset`` header names the offset of
    the next page; the last page has no such header.
    """
    bound = settings.limits.audit_page(limit)
    rows = list_events(session, who.tenant_id, limit=bound + 1, offset=offset)
    if len(rows) > bound:
        response.headers[NEXT_OFFSET_HEADER] = str(offset + bound)
    return [AuditEventOut.model_validate(e) for e in rows[:bound]]
