"""Audit log page (admin, as on the API): paged, filtered by actor, action, outcome and time.

The query is one indexed scan of the tenant's events, newest first; the filters are
exact (actor, outcome) or prefix (action: ``device.`` finds every device write) and a
half-open time range. Bad filter values are ignored with a notice, never a 4xx/5xx.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVarTuple

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from bastion.service.console.deps import ConsoleAdminDep, page_router
from bastion.service.console.paging import PageParams, PageParamsDep, filter_value, paginate
from bastion.service.console.render import NavItem, render
from bastion.service.models import AuditEvent
from bastion.service.web import SessionDep

_Ts = TypeVarTuple("_Ts")

__all__ = ["NAV", "AuditFilters", "audit_rows", "parse_time", "router", "top_actions"]

router = page_router()
NAV = NavItem("Audit", "/console/audit", role="admin")

#: Bars in the "events by action" chart.
CHART_ACTIONS = 12
#: Every outcome the audit log records (audit.service.record and record_denied; fleet lifecycle refusals).
OUTCOMES = ("ok", "denied", "refused")


@dataclass(frozen=True)
class AuditFilters:
    """What the audit page shows: every field None is no filter."""

    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def parse_time(raw: str | None) -> dt.datetime | None:
    """An ISO 8601 date or date-time (UTC when it names no zone); None when absent or not one."""
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if not dt.datetime(1970, 1, 1, tzinfo=dt.UTC) <= value <= dt.datetime(9000, 1, 1, tzinfo=dt.UTC):
        return None
    return value.astimezone(dt.UTC)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(query: Select[*_Ts], tenant_id: str, f: AuditFilters) -> Select[*_Ts]:
    query = query.where(AuditEvent.tenant_id == tenant_id)
    if f.actor is not None:
        query = query.where(AuditEvent.actor == f.actor)
    if f.action is not None:
        query = query.where(AuditEvent.action.like(_escape_like(f.action) + "%", escape="\\"))
    if f.outcome is not None:
        query = query.where(AuditEvent.outcome == f.outcome)
    if f.since is not None:
        query = query.where(AuditEvent.at >= f.since)
    if f.until is not None:
        query = query.where(AuditEvent.at < f.until)
    return query


def audit_rows(session: Session, tenant_id: str, f: AuditFilters, params: PageParams) -> Sequence[AuditEvent]:
    """The tenant's events matching ``f``, newest first: ``params.fetch`` of them after ``params.offset``."""
    query = _where(select(AuditEvent), tenant_id, f).order_by(AuditEvent.id.desc())
    return session.scalars(query.offset(params.offset).limit(params.fetch)).all()


def top_actions(session: Session, tenant_id: str, f: AuditFilters) -> list[tuple[str, int]]:
    """Counts of the matching events by action, most frequent first."""
    count = func.count().label("n")
    query = _where(select(AuditEvent.action, count), tenant_id, f).group_by(AuditEvent.action)
    rows = session.execute(query.order_by(count.desc(), AuditEvent.action).limit(CHART_ACTIONS)).all()
    return [(str(action), int(n)) for action, n in rows]


@router.get("/audit", include_in_schema=False)
def audit_page(request: Request, me: ConsoleAdminDep, session: SessionDep, params: PageParamsDep) -> HTMLResponse:
    """The audit log, with its filters, a pager and a chart of the matching events by action."""
    raw = {name: filter_value(request, name) for name in ("actor", "action", "outcome", "since", "until")}
    notices = []
    since, until = parse_time(raw["since"]), parse_time(raw["until"])
    for name, parsed in (("since", since), ("until", until)):
        if raw[name] is not None and parsed is None:
            notices.append(f"'{name}' is not an ISO 8601 date or time (e.g. 2026-12-02 or 2026-12-02T17:00); ignored")
            raw[name] = None
    outcome = raw["outcome"] if raw["outcome"] in OUTCOMES else None
    if raw["outcome"] is not None and outcome is None:
        notices.append(f"'outcome' is one of {', '.join(OUTCOMES)}; ignored")
        raw["outcome"] = None
    filters = AuditFilters(actor=raw["actor"], action=raw["action"], outcome=outcome, since=since, until=until)
    rows = audit_rows(session, me.tenant_id, filters, params)
    shown, pager = paginate(params, rows, "/console/audit", raw)
    ctx = {
        "events": shown,
        "pager": pager,
        "filters": raw,
        "outcomes": OUTCOMES,
        "notices": notices,
        "by_action": top_actions(session, me.tenant_id, filters),
    }
    return render(request, "pages/audit.html", ctx)
