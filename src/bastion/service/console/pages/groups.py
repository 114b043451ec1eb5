"""One device group's page: policy, OS feed, maintenance window, members (paged on the server), deployments.

A contributor may change the group's update policy, OS feed and maintenance window
and delete a group that is not one of its product's defaults; both go through the
API's domain functions (:func:`bastion.service.fleet.service.update_group`,
:func:`bastion.service.fleet.lifecycle.delete_group`), so they check, republish and
audit exactly as ``PATCH``/``DELETE /api/v1/device-groups/{ref}`` do, with the
session's token as the actor. A reader sees the same page without those controls.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.service.console.deps import ConsoleContributorDep, ConsoleReaderDep, CsrfDep, page_router
from bastion.service.console.pages import _device_queries as q
from bastion.service.console.paging import PageParamsDep, paginate
from bastion.service.console.render import render
from bastion.service.console.views.groups import group_view
from bastion.service.errors import InvalidRequest
from bastion.service.fleet import lifecycle, targets
from bastion.service.fleet import service as fleet
from bastion.service.fleet.policy import OsFeed, UpdatePolicy
from bastion.service.fleet.targets import PublisherDep
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["router"]

router = page_router()
#: Bound on a group id in a path (a real one is a 36-character UUID).
MAX_GROUP_ID_CHARS = 64
#: Bound on the text of the settings form's fields.
MAX_FIELD_CHARS = 40
GroupIdPath = Annotated[str, Path(min_length=1, max_length=MAX_GROUP_ID_CHARS, pattern=r"^[0-9A-Za-z-]+$")]
FormText = Annotated[str, Form(max_length=MAX_FIELD_CHARS)]
_NOTICES = {"updated": "group settings saved"}


def _url(group_id: str) -> str:
    return f"/console/groups/{quote(group_id, safe='')}"


@router.get("/groups/{group_id}", include_in_schema=False)
def group_page(
    request: Request,
    group_id: GroupIdPath,
    me: ConsoleReaderDep,
    *,
    session: SessionDep,
    now: NowDep,
    params: PageParamsDep,
) -> HTMLResponse:
    """The group: its settings, a chart of its members' standing and OS versions, a page of members, deployments."""
    group = fleet.get_group_for(session, me.principal, group_id, action="device_group.read", now=now)
    view = group_view(session, me.tenant_id, group)
    filters = q.DeviceFilters(group_id=group.id)
    rows = q.device_rows(session, me.tenant_id, filters, params)
    members, pager = paginate(params, rows, _url(group.id), {})
    ctx = {
        "g": view,
        "members": members,
        "pager": pager,
        "by_standing": q.standing_counts(session, me.tenant_id, filters) if view.devices else [],
        "policies": [p.value for p in UpdatePolicy],
        "feeds": [f.value for f in OsFeed],
        "notice": _NOTICES.get(request.query_params.get("done") or ""),
    }
    return render(request, "pages/group.html", ctx)


def _minutes(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidRequest("the window's duration is a whole number of minutes", code="invalid_window")
    return int(raw)


@router.post("/groups/{group_id}/settings", include_in_schema=False)
def update_settings(
    group_id: GroupIdPath,
    me: ConsoleContributorDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    update_policy: FormText,
    os_feed: FormText,
    window_start: FormText = "",
    window_minutes: FormText = "",
) -> Response:
    """Change the group's update policy, OS feed and maintenance window (both window fields empty: any time)."""
    start = window_start.strip() or None
    change = fleet.GroupChange(
        update_policy=update_policy.strip(),
        os_feed=os_feed.strip(),
        set_window=True,
        window_start=start,
        window_minutes=_minutes(window_minutes),
    )
    group = fleet.update_group(session, me.principal, group_id, change, settings=settings, now=now, publisher=pub)
    return RedirectResponse(f"{_url(group.id)}?done=updated", status_code=303)


@router.post("/groups/{group_id}/delete", include_in_schema=False)
def delete(
    group_id: GroupIdPath,
    me: ConsoleContributorDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    """Delete the group (not a default one, not in use: the domain refuses with a 409 page that says why)."""
    targets.remove_repositories(settings, [lifecycle.delete_group(session, me.principal, group_id, now=now)])
    return RedirectResponse("/console/products", status_code=303)
