"""Sign-in and sign-out: an operator token, verified by the auth service, exchanged for a session cookie.

The token is posted once, in a form field (never in a URL), checked with
:func:`~bastion.service.auth.service.authorize` (so a failure is counted in the
failed-authentication log as on the API), and never stored or shown again. A
new session id is minted on every sign-in and any session the browser still
presents is ended first, so an id planted before sign-in is worthless
(session fixation).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.service.audit.service import record
from bastion.service.auth.limits import AuthLimitsDep
from bastion.service.auth.service import authorize
from bastion.service.console.csrf import (
    CsrfRefused,
    check_origin,
    check_token,
    clear_signin_cookie,
    new_signin_token,
    presented_signin_cookie,
    set_signin_cookie,
)
from bastion.service.console.deps import CsrfDep, page_router, safe_next
from bastion.service.console.render import render
from bastion.service.console.session import (
    END_REASONS,
    Ended,
    clear_cookie,
    create_session,
    decode_cookie,
    delete_session,
    get_console_settings,
    hash_session_id,
    look_up,
    presented_cookie,
    set_cookie,
)
from bastion.service.errors import Forbidden, Unauthenticated
from bastion.service.web import NowDep, SessionDep

__all__ = ["router"]

router = page_router()
_security_log = logging.getLogger("bastion.service.console.security")

#: Bound on the token field of the sign-in form (a real token is about 80 characters).
MAX_TOKEN_FIELD = 200
#: How long the sign-in form's double-submit cookie lives.
SIGNIN_COOKIE_MAX_AGE_S = 3600


def _form(
    request: Request, *, next_path: str, status: int = 200, error: str | None = None, current: str | None = None
) -> HTMLResponse:
    token = new_signin_token()
    ended = request.query_params.get("ended")
    notice = END_REASONS.get(ended) if ended else None
    if request.query_params.get("signed_out") == "1":
        notice = "you are signed out"
    response = render(
        request,
        "pages/signin.html",
        {"signin_csrf": token, "next_path": next_path, "error": error, "notice": notice, "current": current},
        status=status,
    )
    set_signin_cookie(response, request, token, max_age=SIGNIN_COOKIE_MAX_AGE_S)
    return response


@router.get("/signin", include_in_schema=False)
def signin_page(request: Request, session: SessionDep, now: NowDep) -> Response:
    """The sign-in form, always (a browser already signed in is told so, never carried into that session)."""
    next_path = safe_next(request.query_params.get("next"))
    try:
        live = look_up(session, presented_cookie(request), now=now, settings=get_console_settings(request))
    except Ended:
        live = None
    current = None
    if live is not None:
        current = f"{live.principal.tenant_name} ({live.principal.role})"
    return _form(request, next_path=next_path, current=current)


@router.post("/signin", include_in_schema=False)
def signin(
    request: Request,
    *,
    session: SessionDep,
    now: NowDep,
    limits: AuthLimitsDep,
    token: Annotated[str, Form(max_length=MAX_TOKEN_FIELD)] = "",
    csrf_token: Annotated[str, Form(max_length=MAX_TOKEN_FIELD)] = "",
    next: Annotated[str, Form(max_length=1000)] = "",  # noqa: A002 - the form field's name
) -> Response:
    """Verify the token, end any session the browser presents, start a fresh one, go to ``next``."""
    next_path = safe_next(next)
    try:
        check_origin(request)
        check_token(csrf_token, presented_signin_cookie(request))
    except CsrfRefused as refused:
        # Nobody is signed in, so there is no tenant to write to: the service log has it.
        _security_log.warning("console sign-in CSRF refusal: %s", refused.reason)
        raise
    old = decode_cookie(presented_cookie(request))
    if old is not None:
        delete_session(session, hash_session_id(old))
        session.commit()
    try:
        principal = authorize(
            session, f"Bearer {token.strip()}", "reader", now=now, target="POST /console/signin", limits=limits
        )
    except (Unauthenticated, Forbidden) as exc:
        return _form(request, next_path=next_path, status=401, error=exc.detail)
    settings = get_console_settings(request)
    new = create_session(session, principal, now=now, settings=settings)
    record(
        session,
        now=now,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="console.signin",
        target=f"token:{principal.token_id}",
        detail=f"role={principal.role}",
    )
    session.commit()
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(response, request, new.cookie, max_age=settings.max_age)
    clear_signin_cookie(response, request)
    return response


@router.post("/signout", include_in_schema=False)
def signout(request: Request, me: CsrfDep, session: SessionDep, now: NowDep) -> Response:
    """End the session: its row is deleted and the cookie cleared."""
    delete_session(session, me.session_id_hash)
    record(
        session,
        now=now,
        tenant_id=me.tenant_id,
        actor=me.actor,
        action="console.signout",
        target=f"token:{me.principal.token_id}",
    )
    session.commit()
    response = RedirectResponse("/console/signin?signed_out=1", status_code=303)
    clear_cookie(response, request)
    return response
