"""Tokens page (admin, as on the API): list with state, create (the token is shown once), revoke.

A new token is shown in the answer to the create POST itself (no redirect, so it is
never in a URL or the history), with ``Cache-Control: no-store``; it is not stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.service.auth.limits import AuthLimitsDep
from bastion.service.auth.service import create_token, list_tokens, revoke_token, token_state
from bastion.service.auth.tokens import ROLES
from bastion.service.console.deps import ConsoleAdminDep, CsrfDep, page_router
from bastion.service.console.paging import PageParamsDep, paginate
from bastion.service.console.render import NavItem, render
from bastion.service.errors import InvalidRequest
from bastion.service.web import NowDep, SessionDep

__all__ = ["NAV", "router"]

router = page_router()
NAV = NavItem("Tokens", "/console/tokens", role="admin")

#: Most days a token may be given in the form (the auth limits bound it too).
MAX_FORM_DAYS = 366


def _page(
    request: Request,
    me: ConsoleAdminDep,
    session: SessionDep,
    now: dt.datetime,
    params: PageParamsDep,
    *,
    created: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    rows = list_tokens(session, me.principal, limit=params.fetch, offset=params.offset)
    shown, pager = paginate(params, rows, "/console/tokens", {})
    tokens = [
        {
            "id": t.id,
            "name": t.name,
            "role": t.role,
            "state": token_state(t, now),
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "revoked_by": t.revoked_by,
            "current": t.id == me.principal.token_id,
        }
        for t in shown
    ]
    ctx = {"tokens": tokens, "pager": pager, "roles": ROLES, "created": created, "error": error}
    return render(request, "pages/tokens.html", ctx, status=status)


@router.get("/tokens", include_in_schema=False)
def tokens_page(
    request: Request, me: ConsoleAdminDep, session: SessionDep, now: NowDep, params: PageParamsDep
) -> HTMLResponse:
    """The tenant's tokens, oldest first."""
    return _page(request, me, session, now, params)


@router.post("/tokens", include_in_schema=False)
def create(
    request: Request,
    me: ConsoleAdminDep,
    _csrf: CsrfDep,
    *,
    session: SessionDep,
    now: NowDep,
    limits: AuthLimitsDep,
    params: PageParamsDep,
    name: Annotated[str, Form(max_length=100)] = "",
    role: Annotated[str, Form(max_length=16)] = "reader",
    days: Annotated[str, Form(max_length=8)] = "",
) -> HTMLResponse:
    """Mint a token through the auth service (audited with this session's token); show it once."""
    lifetime = None
    if days.strip():
        if not (days.strip().isdigit() and 1 <= int(days) <= MAX_FORM_DAYS):
            return _page(request, me, session, now, params, error=f"days must be 1 to {MAX_FORM_DAYS}", status=400)
        lifetime = dt.timedelta(days=int(days))
    try:
        minted, row = create_token(
            session, me.principal, name=name.strip(), role=role, now=now, lifetime=lifetime, limits=limits
        )
    except InvalidRequest as exc:
        return _page(request, me, session, now, params, error=exc.detail, status=400)
    created = {"token": minted.token, "id": minted.token_id, "role": role, "name": row.name}
    return _page(request, me, session, now, params, created=created)


@router.post("/tokens/{token_id}/revoke", include_in_schema=False)
def revoke(
    token_id: Annotated[str, Path(max_length=64)],
    me: ConsoleAdminDep,
    _csrf: CsrfDep,
    session: SessionDep,
    now: NowDep,
) -> Response:
    """Revoke a token of the tenant (it stops working at once, and so do its console sessions)."""
    revoke_token(session, me.principal, token_id, now=now)
    return RedirectResponse("/console/tokens", status_code=303)
