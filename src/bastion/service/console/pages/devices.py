"""Device list and device page, with revoke, assign to group and unclaim (contributor, CSRF).

The actions call the same domain functions as the API (so the audit log records
them with the session's token as actor) and re-sign the tenant's CRLs after a
revocation, as the API's endpoints do.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.service.ca.crl import publish_tenant_crls
from bastion.service.console.deps import ConsoleContributorDep, ConsoleReaderDep, CsrfDep, page_router
from bastion.service.console.pages import _device_queries as q
from bastion.service.console.paging import PageParamsDep, filter_value, paginate
from bastion.service.console.render import NavItem, render
from bastion.service.devices import service as devices
from bastion.service.devicestatus.service import update_history
from bastion.service.errors import ServiceError
from bastion.service.fleet import service as fleet
from bastion.service.fleet.limits import FleetLimitsDep
from bastion.service.ownership import service as ownership
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["NAV", "router"]

router = page_router()
NAV = NavItem("Devices", "/console/devices")
_log = logging.getLogger(__name__)
_FILTERS = ("id", "group", "os", "standing")
#: Bound on a device ID in a path (a real one is 64 characters; longer is refused by validation).
MAX_DEVICE_ID_CHARS = 80
DeviceIdPath = Annotated[str, Path(max_length=MAX_DEVICE_ID_CHARS)]


@router.get("/devices", include_in_schema=False)
def devices_page(request: Request, me: ConsoleReaderDep, session: SessionDep, params: PageParamsDep) -> HTMLResponse:
    """The tenant's devices, filtered and paged on the server, with a chart of their standing."""
    raw = {name: filter_value(request, name) for name in _FILTERS}
    filters, notices = q.DeviceFilters.parse(
        id_prefix=raw["id"], group_id=raw["group"], os_version=raw["os"], standing=raw["standing"]
    )
    rows = q.device_rows(session, me.tenant_id, filters, params)
    shown, pager = paginate(params, rows, "/console/devices", raw)
    ctx = {
        "devices": shown,
        "pager": pager,
        "filters": raw,
        "notices": notices,
        "groups": q.group_choices(session, me.tenant_id),
        "standings": q.STANDINGS,
        "by_standing": q.standing_counts(session, me.tenant_id, filters),
    }
    return render(request, "pages/devices.html", ctx)


@router.get("/devices/{device_id}", include_in_schema=False)
def device_page(
    request: Request,
    device_id: DeviceIdPath,
    me: ConsoleReaderDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    limits: FleetLimitsDep,
) -> HTMLResponse:
    """One device: identity, certificate, attestations, installed images, updates, errors, security events."""
    device = devices.get_device_for(session, me.principal, device_id, action="device.read", now=now)
    tenant = me.tenant_id
    groups = q.group_choices(session, tenant)
    ctx = {
        "device": device,
        "group_label": dict(groups).get(device.group_id or ""),
        "groups": groups,
        "attestations": devices.recent_attestations(
            session, me.principal, device_id, limit=settings.limits.recent_attestations
        ),
        "series": q.attestation_series(session, tenant, device_id),
        "certificates": q.certificates(session, tenant, device_id),
        "status": q.installed(session, tenant, device_id),
        "updates": update_history(session, tenant, device_id, limit=limits.update_history_rows),
        "errors": q.error_events(session, tenant, device_id),
        "security": q.security_events(session, tenant, device_id),
        "ownership": q.ownership_events(session, tenant, device_id),
        "notice": {"revoked": "device revoked", "assigned": "group assigned"}.get(
            request.query_params.get("done") or ""
        ),
    }
    return render(request, "pages/device.html", ctx)


def _publish_crls(session: SessionDep, tenant_id: str, settings: SettingsDep, now: NowDep) -> None:
    """Re-sign the tenant's CRLs after a committed revocation, as the API does (the refresh task catches up)."""
    try:
        publish_tenant_crls(session, tenant_id, master_key=settings.master_key, now=now)
    except ServiceError as exc:
        _log.warning("CRL publish after a console revocation failed: %s (%s)", exc.detail, exc.code)


@router.post("/devices/{device_id}/revoke", include_in_schema=False)
def revoke(
    device_id: DeviceIdPath,
    me: ConsoleContributorDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    """Revoke the device (no more certificates; its unexpired ones go on the CRL)."""
    devices.revoke_device(session, me.principal, device_id, now=now)
    _publish_crls(session, me.tenant_id, settings, now)
    return RedirectResponse(f"/console/devices/{device_id}?done=revoked", status_code=303)


@router.post("/devices/{device_id}/group", include_in_schema=False)
def assign(
    device_id: DeviceIdPath,
    me: ConsoleContributorDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    now: NowDep,
    group: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Put the device into one of the tenant's groups (empty: out of any group)."""
    fleet.assign_device(session, me.principal, device_id, group.strip() or None, now=now)
    return RedirectResponse(f"/console/devices/{device_id}?done=assigned", status_code=303)


@router.post("/devices/{device_id}/unclaim", include_in_schema=False)
def unclaim(
    device_id: DeviceIdPath,
    me: ConsoleContributorDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    """Give the device up: its row goes (no certificate, no update), the history stays."""
    ownership.unclaim_device(session, me.principal, device_id, now=now)
    _publish_crls(session, me.tenant_id, settings, now)
    return RedirectResponse("/console/devices", status_code=303)
