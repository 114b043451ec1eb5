"""OS feeds: what each feed offers, which groups follow it, and promotion of an evaluation image to retail.

Promotion goes through :func:`~bastion.service.osimages.service.promote_os_image`,
like ``POST /api/v1/os-feeds/retail/images``: the contributor role (the API's
rule), the CSRF token, the session's token as the audit actor.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.service.console.deps import ConsoleContributorDep, ConsoleReaderDep, CsrfDep, page_router
from bastion.service.console.render import NavItem, render
from bastion.service.console.views.osfeeds import osfeeds_view
from bastion.service.fleet.targets import PublisherDep
from bastion.service.osimages.service import promote_os_image
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["NAV", "router"]

router = page_router()
NAV = NavItem("OS feeds", "/console/osfeeds")


@router.get("/osfeeds", include_in_schema=False)
def osfeeds(request: Request, me: ConsoleReaderDep, session: SessionDep) -> HTMLResponse:
    """Both feeds, their groups, promotable images and the OS rollouts."""
    return render(request, "pages/osfeeds.html", {"view": osfeeds_view(session, me.tenant_id)})


@router.post("/osfeeds/promote", include_in_schema=False)
def promote(
    me: ConsoleContributorDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    image: Annotated[str, Form(max_length=100)],
) -> Response:
    """Put a retail-eval image (by measurement) on the retail feed too; republish; audited."""
    promote_os_image(session, me.principal, image, to="retail", settings=settings, now=now, publisher=pub)
    return RedirectResponse("/console/osfeeds", status_code=303)
