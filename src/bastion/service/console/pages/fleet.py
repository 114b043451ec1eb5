"""The fleet overview page: device counts by OS version, group, standing and last seen, and attestations over time."""

from __future__ import annotations

import threading

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.console.deps import ConsoleReaderDep, page_router
from bastion.service.console.render import NavItem, render
from bastion.service.console.session import get_console_settings
from bastion.service.console.views.fleet import CHART_WINDOWS, fleet_overview
from bastion.service.console.views.fleet_cache import FleetSnapshot, FleetSnapshots
from bastion.service.web import Clock, NowDep, SessionDep

__all__ = ["NAV", "router"]

router = page_router()
NAV = NavItem("Fleet", "/console/fleet")
DEFAULT_WINDOW = "24h"
_cache_lock = threading.Lock()


def _snapshots(request: Request) -> FleetSnapshots:
    """The app's fleet-overview cache (``app.state.console_fleet_cache``), made on first use."""
    with _cache_lock:
        found = getattr(request.app.state, "console_fleet_cache", None)
        if not isinstance(found, FleetSnapshots):
            found = FleetSnapshots(max_age=get_console_settings(request).fleet_max_age)
            request.app.state.console_fleet_cache = found
        return found


@router.get("/fleet", include_in_schema=False)
def fleet_page(request: Request, me: ConsoleReaderDep, session: SessionDep, now: NowDep) -> HTMLResponse:
    """The tenant's fleet at a glance; ``?window=24h|7d|30d`` picks the chart's span (others: 24h)."""
    window = request.query_params.get("window", DEFAULT_WINDOW)
    if window not in CHART_WINDOWS:
        window = DEFAULT_WINDOW
    tenant_id = me.tenant_id
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    clock: Clock = request.app.state.clock

    def compute() -> FleetSnapshot:
        return FleetSnapshot(fleet_overview(session, tenant_id, now=now, window=window), now)

    def background() -> FleetSnapshot:
        at = clock()
        with factory() as own:
            return FleetSnapshot(fleet_overview(own, tenant_id, now=at, window=window), at)

    cache = _snapshots(request)
    snapshot = cache.get((tenant_id, window), now=now, compute=compute, background=background)
    view = snapshot.overview
    series = {
        "passed": [(p.start, float(p.ok)) for p in view.activity],
        "failed": [(p.start, float(p.failed)) for p in view.activity],
    }
    return render(
        request,
        "pages/fleet.html",
        {
            "view": view,
            "windows": list(CHART_WINDOWS),
            "series": series,
            "computed_at": snapshot.computed_at,
            "age_s": max(0, int((now - snapshot.computed_at).total_seconds())),
            "max_age_s": int(cache.max_age.total_seconds()),
        },
    )
