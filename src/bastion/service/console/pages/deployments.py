"""Deployments: the list, one deployment's staged progress (live while it runs), create, resume and abort.

Writes go through the API's domain functions
(:func:`~bastion.service.deployments.service.create_deployment`,
:func:`~bastion.service.deployments.service.change_rollout`), so they check and
audit exactly as ``POST /api/v1/deployments[/{id}/resume|abort]`` do, with the
session's token as the actor; each needs the contributor role and the CSRF token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.service.console.deps import ConsoleContributorDep, ConsoleReaderDep, CsrfDep, page_router
from bastion.service.console.paging import PageParamsDep, filter_value, paginate
from bastion.service.console.render import NavItem, render, render_fragment
from bastion.service.console.views.deployments import deployment_view, deployments_page, image_choices
from bastion.service.deployments import service
from bastion.service.errors import InvalidRequest
from bastion.service.fleet.limits import FleetLimitsDep
from bastion.service.fleet.service import get_group_for
from bastion.service.fleet.targets import PublisherDep
from bastion.service.rollouts.health import HealthDep
from bastion.service.rollouts.rules import MAX_STAGES, parse_plan
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["NAV", "POLL_SECONDS", "router"]

router = page_router()
NAV = NavItem("Deployments", "/console/deployments")
#: How often a running deployment's page refreshes its progress (htmx polling a fragment).
POLL_SECONDS = 5
#: Device rows shown on a deployment's page (the device list pages through the rest).
DEVICE_ROWS = 50
#: Bound on the text of the create form's fields.
MAX_FIELD_CHARS = 300
#: Bound on the image fields one create form may carry (the service allows fewer per deployment).
MAX_IMAGE_FIELDS = 64

DeploymentId = Annotated[int, Path(ge=1, le=2**31 - 1)]
FormText = Annotated[str, Form(max_length=MAX_FIELD_CHARS)]


@router.get("/deployments", include_in_schema=False)
def deployments(
    request: Request, me: ConsoleReaderDep, session: SessionDep, params: PageParamsDep, now: NowDep
) -> HTMLResponse:
    """A page of deployments, newest first (``?group=`` a group id or name)."""
    group_ref = filter_value(request, "group")
    group_id = None
    if group_ref is not None:
        group_id = get_group_for(session, me.principal, group_ref, action="deployment.read", now=now).id
    page = deployments_page(session, me.tenant_id, offset=params.offset, limit=params.fetch, group_id=group_id)
    rows, pager = paginate(params, page.rows, "/console/deployments", {"group": group_ref})
    choices = image_choices(session, me.tenant_id) if me.can("contributor") else None
    return render(
        request, "pages/deployments.html", {"rows": rows, "pager": pager, "group": group_ref, "choices": choices}
    )


def _stages(raw: str) -> list[float]:
    parts = [p.strip().rstrip("%") for p in raw.split(",") if p.strip()]
    if len(parts) > MAX_STAGES:
        raise InvalidRequest(f"a rollout has at most {MAX_STAGES} stages", code="invalid_rollout")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise InvalidRequest(
            "stages are percentages separated by commas, e.g. 10,50,100", code="invalid_rollout"
        ) from None


@router.post("/deployments", include_in_schema=False)
def create(
    me: ConsoleContributorDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    limits: FleetLimitsDep,
    group: FormText,
    images: Annotated[list[str], Form(max_length=MAX_IMAGE_FIELDS)],
    stages: Annotated[str, Form(max_length=MAX_FIELD_CHARS)] = "",
    soak_seconds: Annotated[int, Form(ge=0)] = 3600,
) -> Response:
    """Create a deployment of the images picked in the form's select to a group, staged when ``stages`` is given.

    Each ``images`` value is an image id (a value may also list ids separated by commas); the
    service checks that every one is the tenant's, whatever the select offered.
    """
    plan = None
    if stages.strip():
        plan = parse_plan(_stages(stages), soak_seconds=soak_seconds, halt=None)
    refs = [r.strip() for value in images for r in value[:MAX_FIELD_CHARS].split(",") if r.strip()]
    deployment = service.create_deployment(
        session,
        me.principal,
        group.strip(),
        refs,
        settings=settings,
        now=now,
        publisher=pub,
        limits=limits,
        rollout=plan,
    )
    return RedirectResponse(f"/console/deployments/{deployment.id}", status_code=303)


def _view_context(
    deployment_id: int,
    me: ConsoleReaderDep,
    *,
    session: SessionDep,
    now: NowDep,
    limits: FleetLimitsDep,
    health: HealthDep,
) -> dict[str, object]:
    deployment = service.get_deployment_for(session, me.principal, deployment_id, now=now)
    report = service.deployment_report(session, deployment, max_devices=limits.deployment_device_rows)
    view = deployment_view(session, report, health, now=now)
    return {"d": view, "poll_seconds": POLL_SECONDS, "device_rows": DEVICE_ROWS}


@router.get("/deployments/{deployment_id}", include_in_schema=False)
def show(
    request: Request,
    deployment_id: DeploymentId,
    me: ConsoleReaderDep,
    *,
    session: SessionDep,
    now: NowDep,
    limits: FleetLimitsDep,
    health: HealthDep,
) -> HTMLResponse:
    """One deployment: stages with progress and health, the halt reason, history and devices."""
    return render(
        request,
        "pages/deployment.html",
        _view_context(deployment_id, me, session=session, now=now, limits=limits, health=health),
    )


@router.get("/deployments/{deployment_id}/progress", include_in_schema=False)
def progress(
    request: Request,
    deployment_id: DeploymentId,
    me: ConsoleReaderDep,
    *,
    session: SessionDep,
    now: NowDep,
    limits: FleetLimitsDep,
    health: HealthDep,
) -> HTMLResponse:
    """The progress fragment htmx polls while the rollout runs (it stops polling once nothing moves by itself)."""
    ctx = _view_context(deployment_id, me, session=session, now=now, limits=limits, health=health)
    return render_fragment(request, "fragments/deployments_progress.html", ctx)


def _change(action: str):  # type: ignore[no-untyped-def]
    def handler(
        deployment_id: DeploymentId,
        me: ConsoleContributorDep,
        _csrf: CsrfDep,
        *,
        session: SessionDep,
        settings: SettingsDep,
        now: NowDep,
        pub: PublisherDep,
    ) -> Response:
        service.change_rollout(session, me.principal, deployment_id, action, now=now, settings=settings, publisher=pub)
        return RedirectResponse(f"/console/deployments/{deployment_id}", status_code=303)

    handler.__name__ = f"{action}_deployment"
    handler.__doc__ = f"{action.capitalize()} the deployment's staged rollout (contributor, CSRF; audited)."
    return handler


for _action in service.ROLLOUT_ACTIONS:
    router.post(f"/deployments/{{deployment_id}}/{_action}", include_in_schema=False)(_change(_action))
