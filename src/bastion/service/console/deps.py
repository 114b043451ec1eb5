"""Console dependencies: who is signed in, with what role, and the CSRF check of a POST.

Example:
    >>> router = page_router()
    >>> @router.get("/things")
    ... def things(request: Request, me: ConsoleReaderDep) -> HTMLResponse:
    ...     return render(request, "pages/things.html", {})  # doctest: +SKIP

Every console route is a :class:`ConsoleRoute` (made by :func:`page_router`):
it turns the refusals raised here into pages (a 303 to the sign-in page, a 403
page) instead of the API's JSON errors, and sets the console's security headers.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from markupsafe import escape
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.jsonlog import REQUEST_ID
from bastion.service import errors
from bastion.service.audit.service import record_denied
from bastion.service.auth.service import Principal
from bastion.service.auth.tokens import ROLES, role_allows
from bastion.service.console.csrf import CsrfRefused, check_origin, check_token, presented_token, session_csrf_token
from bastion.service.console.headers import apply_page_headers
from bastion.service.console.session import Ended, clear_cookie, get_console_settings, look_up, presented_cookie
from bastion.service.web import NowDep, SessionDep

__all__ = [
    "ConsoleAdminDep",
    "ConsoleContributorDep",
    "ConsolePrincipal",
    "ConsoleReaderDep",
    "ConsoleRoute",
    "CsrfDep",
    "RoleTooLow",
    "SignInRequired",
    "page_router",
    "safe_next",
]

_log = logging.getLogger(__name__)
_security_log = logging.getLogger("bastion.service.console.security")

#: Bound on a ``next=`` path (longer ones are dropped, not cut).
MAX_NEXT_CHARS = 500
HOME = "/console/"


@dataclass(frozen=True)
class ConsolePrincipal:
    """The signed-in operator: the token's principal, the session's CSRF token and its stored name."""

    principal: Principal
    csrf_token: str = field(repr=False)
    session_id_hash: str = field(repr=False)

    def can(self, role: str) -> bool:
        """Whether the session's token has ``role`` or a higher one."""
        return role_allows(self.principal.role, role)

    @property
    def tenant_id(self) -> str:
        """The tenant the session acts in."""
        return self.principal.tenant_id

    @property
    def actor(self) -> str:
        """How the audit log names the session's writes: its token, as the API would."""
        return self.principal.actor


class SignInRequired(Exception):  # noqa: N818 - a redirect carried to the route
    """No live session: the route answers 303 to the sign-in page (with why, when a session ended)."""

    def __init__(self, next_path: str, reason: str | None = None) -> None:
        super().__init__(reason or "sign in")
        self.next_path = next_path
        self.reason = reason


class RoleTooLow(Exception):  # noqa: N818 - a refusal carried to the route
    """The session's token has too low a role; the route answers a 403 page."""

    def __init__(self, need: str, have: str) -> None:
        super().__init__(f"this needs the {need} role; your token has the {have} role")
        self.need = need
        self.have = have


def safe_next(raw: str | None) -> str:
    """A ``next=`` value that stays inside the console, else the console's home (no open redirect).

    Only a path under ``/console`` is kept: no scheme, no host, no ``//``, no backslash,
    no dot segment (plain or percent-encoded), no control character.
    """
    if not raw or len(raw) > MAX_NEXT_CHARS or not raw.isascii() or not raw.isprintable():
        return HOME
    if "\\" in raw or "//" in raw or not (raw == "/console" or raw.startswith(("/console/", "/console?"))):
        return HOME
    path = unquote(raw.split("?", 1)[0])
    if any(segment in {".", ".."} for segment in path.split("/")) or "\\" in path or "//" in path:
        return HOME  # a dot segment (also percent-encoded) would climb out of /console
    if path.startswith(("/console/signin", "/console/signout")):
        return HOME
    return raw


def _current_path(request: Request) -> str:
    path = request.url.path
    if request.method == "GET" and request.url.query:
        path = f"{path}?{request.url.query}"
    return path


def console_session(request: Request, session: SessionDep, now: NowDep) -> ConsolePrincipal:
    """The signed-in operator of any role, else :class:`SignInRequired`."""
    found = getattr(request.state, "console", None)
    if isinstance(found, ConsolePrincipal):
        return found
    try:
        lookup = look_up(session, presented_cookie(request), now=now, settings=get_console_settings(request))
    except Ended as ended:
        raise SignInRequired(_current_path(request), ended.reason) from None
    if lookup is None:
        raise SignInRequired(_current_path(request))
    me = ConsolePrincipal(
        principal=lookup.principal, csrf_token=session_csrf_token(lookup.raw), session_id_hash=lookup.id_hash
    )
    request.state.console = me
    return me


def require_console_role(role: str) -> Callable[..., ConsolePrincipal]:
    """A dependency: the signed-in operator, whose token must have ``role`` or higher."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def dependency(
        request: Request,
        session: SessionDep,
        now: NowDep,
        me: Annotated[ConsolePrincipal, Depends(console_session)],
    ) -> ConsolePrincipal:
        if not me.can(role):
            record_denied(
                session,
                now=now,
                tenant_id=me.tenant_id,
                actor=me.actor,
                action="console.insufficient_role",
                target=f"{request.method} {request.url.path}"[:200],
                detail=f"role {me.principal.role} is below {role}",
            )
            raise RoleTooLow(role, me.principal.role)
        return me

    dependency.__name__ = f"require_console_{role}"
    return dependency


async def check_csrf(
    request: Request,
    session: SessionDep,
    now: NowDep,
    me: Annotated[ConsolePrincipal, Depends(console_session)],
) -> ConsolePrincipal:
    """Check a signed-in POST's CSRF token and origin; a refusal is recorded in the tenant's audit log."""
    try:
        check_origin(request)
        check_token(await presented_token(request), me.csrf_token)
    except CsrfRefused as refused:
        record_denied(
            session,
            now=now,
            tenant_id=me.tenant_id,
            actor=me.actor,
            action="console.csrf_refused",
            target=f"{request.method} {request.url.path}"[:200],
            detail=f"{refused.reason}: {refused.detail}",
        )
        _security_log.warning("console CSRF refusal: %s on %s", refused.reason, request.url.path[:200])
        raise
    return me


ConsoleReaderDep = Annotated[ConsolePrincipal, Depends(require_console_role("reader"))]
ConsoleContributorDep = Annotated[ConsolePrincipal, Depends(require_console_role("contributor"))]
ConsoleAdminDep = Annotated[ConsolePrincipal, Depends(require_console_role("admin"))]
#: Every console POST depends on this as well as on its role.
CsrfDep = Annotated[ConsolePrincipal, Depends(check_csrf)]

#: Domain errors a console page may let through -> the status of the error page.
_STATUS: dict[type[errors.ServiceError], int] = {
    errors.InvalidRequest: 400,
    errors.InvalidDeviceId: 400,
    errors.PayloadTooLarge: 413,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
}


def _status(exc: errors.ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def _signin_redirect(request: Request, refused: SignInRequired) -> Response:
    target = f"/console/signin?next={quote(safe_next(refused.next_path), safe='/')}"
    if refused.reason is not None:
        target += f"&ended={quote(refused.reason)}"
    if request.headers.get("hx-request") == "true":
        # htmx follows a 303 inside the fragment; HX-Redirect moves the whole page instead.
        response: Response = Response(status_code=200, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    if refused.reason is not None:
        clear_cookie(response, request)
    return response


def _problem(request: Request, status: int, title: str, detail: str, request_id: str | None = None) -> HTMLResponse:
    from bastion.service.console.render import render

    return render(request, "problem.html", {"title": title, "detail": detail, "request_id": request_id}, status=status)


#: The page of a failed console request when even the error template cannot be drawn (no template, no context).
_BARE_ERROR_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Error · Bastion</title></head>'
    "<body><h1>Error</h1><p>The service could not complete this request.</p>"
    '<p>Request ID: <code class="request-id">{request_id}</code></p>'
    '<p><a href="/console/">Back to the console</a></p></body></html>'
)


def _request_id() -> str:
    """The id the access log and every log line of this request carry (a fresh one outside the observer)."""
    return REQUEST_ID.get() or secrets.token_hex(16)


def _failure_page(request: Request, exc: BaseException) -> HTMLResponse:
    """A 500 page for a console request that failed: the request id to quote, never the error itself.

    The traceback goes to the service log with the same id, so an operator's report finds it.
    """
    request_id = _request_id()
    _log.error(
        "console page failed: %s %s (request %s)",
        request.method,
        request.url.path[:200],
        request_id,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    detail = "the service could not complete this request; quote the request ID below when you report it"
    try:
        return _problem(request, 500, "Error", detail, request_id=request_id)
    except Exception as render_exc:  # noqa: BLE001 - the error page itself failed: a fixed page, still HTML
        _log.error("console error page failed (request %s)", request_id, exc_info=render_exc)
        return HTMLResponse(_BARE_ERROR_PAGE.format(request_id=escape(request_id)), status_code=500)


class ConsoleRoute(APIRoute):
    """An API route whose refusals and errors are console pages, with the console's headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except SignInRequired as refused:
                response = _signin_redirect(request, refused)
            except RoleTooLow as refused:
                response = _problem(request, 403, "Not allowed", str(refused))
            except CsrfRefused as refused:
                response = _problem(
                    request,
                    403,
                    "Request refused (CSRF)",
                    f"{refused.detail}. Nothing was changed. Reload the page and try again; the refusal was recorded.",
                )
            except errors.ServiceError as exc:
                status = _status(exc)
                if status >= 500:
                    response = _failure_page(request, exc)
                else:
                    response = _problem(request, status, "Cannot do that", exc.detail)
            except RequestValidationError:
                response = _problem(request, 400, "Bad request", "a value in the request is not valid")
            except (OverflowError, DataError):
                response = _problem(request, 400, "Bad request", "a number in the request is out of range")
            except OperationalError:
                response = _problem(request, 503, "Busy", "the service's database is busy or unreachable; retry")
            except StarletteHTTPException:
                raise  # the framework's own answers (an unparseable body): the app's handler shapes them
            except Exception as exc:  # noqa: BLE001 - a bug (a template that fails to render): HTML, not JSON
                response = _failure_page(request, exc)
            return apply_page_headers(response)

        return handler


def page_router() -> APIRouter:
    """The router every console page module builds its routes on (paths below ``/console``).

    The prefix is the page router's own, so each route's template is its full path
    (``/console/devices``), which the access log and the metrics label it by.
    """
    return APIRouter(prefix="/console", route_class=ConsoleRoute)
