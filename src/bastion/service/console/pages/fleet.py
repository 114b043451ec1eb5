"""The fleet overview page: device counts by OS version, group, standing and last seen, and attestations over time."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from bastion.service.console.deps import ConsoleReaderDep, page_router
from bastion.service.console.render import NavItem, render
from bastion.service.console.views.fleet import CHART_WINDOWS, fleet_overview
from bastion.service.web import NowDep, SessionDep

__all__ = ["NAV", "router"]

router = page_router()
NAV = NavItem("Fleet", "/console/fleet")
DEFAULT_WINDOW = "24h"


@router.get("/fleet", include_in_schema=False)
def fleet_page(request: Request, me: ConsoleReaderDep, session: SessionDep, now: NowDep) -> HTMLResponse:
    """The tenant's fleet at a glance; ``?window=24h|7d|30d`` picks the chart's span (others: 24h)."""
    window = request.query_params.get("window", DEFAULT_WINDOW)
    if window not in CHART_WINDOWS:
        window = DEFAULT_WINDOW
    view = fleet_overview(session, me.tenant_id, now=now, window=window)
    series = {
        "passed": [(p.start, float(p.ok)) for p in view.activity],
        "failed": [(p.start, float(p.failed)) for p in view.activity],
    }
    return render(request, "pages/fleet.html", {"view": view, "windows": list(CHART_WINDOWS), "series": series})
