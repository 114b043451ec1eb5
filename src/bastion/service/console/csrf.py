"""CSRF protection of every console POST.

A signed-in session's CSRF token is an HMAC of a fixed label under the session's
own random id (the cookie's bytes), so it is bound to that session, is never
stored, and another session's token never matches. Before sign-in there is no
session: the sign-in form uses a double-submit cookie (a random value in an
HttpOnly, SameSite=Strict cookie and the same value in the form).

Every POST must carry the token in the form field ``csrf_token`` or the header
``X-CSRF-Token`` (compared in constant time), and, when the browser sends them,
``Origin`` must be the console's own origin and ``Sec-Fetch-Site`` must be
``same-origin``. A refusal raises :class:`CsrfRefused`; the console answers 403
with a page that says what happened, and records it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from fastapi import Request, Response

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "MAX_CSRF_CHARS",
    "SECURE_SIGNIN_COOKIE",
    "SIGNIN_COOKIE",
    "SIGNIN_COOKIE_PATH",
    "CsrfRefused",
    "check_origin",
    "check_token",
    "clear_signin_cookie",
    "new_signin_token",
    "presented_signin_cookie",
    "presented_token",
    "session_csrf_token",
    "set_signin_cookie",
]

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: The double-submit cookie of the sign-in form over plain http, and its path there.
SIGNIN_COOKIE = "bastion_console_signin"
SIGNIN_COOKIE_PATH = "/console/signin"
#: Its name over https: ``__Host-`` (Secure, Path=/, no Domain), so no sibling host or plain-http
#: answer can plant the value a forged sign-in would need (the classic attack on a double submit).
SECURE_SIGNIN_COOKIE = "__Host-bastion_console_signin"
#: Bound on a presented CSRF token (a real one is 43 characters).
MAX_CSRF_CHARS = 64
_LABEL = b"bastion console csrf v1"


class CsrfRefused(Exception):  # noqa: N818 - a refusal carried to the route, which answers 403
    """A POST without the right CSRF token, or from another origin; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def session_csrf_token(session_raw: bytes) -> str:
    """The CSRF token of the session whose cookie carries ``session_raw``."""
    return _b64(hmac.new(session_raw, _LABEL, hashlib.sha256).digest())


def new_signin_token() -> str:
    """A fresh random value for the sign-in form's double-submit cookie."""
    return secrets.token_urlsafe(32)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_signin_cookie(response: Response, request: Request, value: str, *, max_age: int) -> None:
    """Set the sign-in form's double-submit cookie (HttpOnly, SameSite=Strict; ``__Host-`` over https)."""
    secure = _secure(request)
    response.set_cookie(
        SECURE_SIGNIN_COOKIE if secure else SIGNIN_COOKIE,
        value,
        max_age=max_age,
        path="/" if secure else SIGNIN_COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_signin_cookie(response: Response, request: Request) -> None:
    """Drop the sign-in form's double-submit cookie (once it has served)."""
    secure = _secure(request)
    response.delete_cookie(
        SECURE_SIGNIN_COOKIE if secure else SIGNIN_COOKIE,
        path="/" if secure else SIGNIN_COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def presented_signin_cookie(request: Request) -> str:
    """The double-submit value the request's cookie carries ("" when none), under this scheme's name only."""
    return request.cookies.get(SECURE_SIGNIN_COOKIE if _secure(request) else SIGNIN_COOKIE) or ""


async def presented_token(request: Request) -> str | None:
    """The CSRF token a POST carries: the ``X-CSRF-Token`` header, else the ``csrf_token`` form field."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return None
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


def check_token(presented: str | None, expected: str) -> None:
    """Compare a presented CSRF token with the expected one in constant time.

    Raises:
        CsrfRefused: missing, too long, or not equal.
    """
    if not presented:
        raise CsrfRefused("csrf_missing", "the form carried no CSRF token")
    if len(presented) > MAX_CSRF_CHARS or not presented.isascii():
        raise CsrfRefused("csrf_mismatch", "the form's CSRF token is not this session's")
    if not hmac.compare_digest(presented.encode("ascii"), expected.encode("ascii")):
        raise CsrfRefused("csrf_mismatch", "the form's CSRF token is not this session's")


def _own_origin(request: Request) -> str:
    url = request.url
    return f"{url.scheme}://{url.netloc}".lower()


def check_origin(request: Request) -> None:
    """Refuse a POST whose ``Origin`` is another origin, or whose ``Sec-Fetch-Site`` is not same-origin.

    Both headers are optional (older clients, the CLI's tests); when present they must agree.
    ``Origin: null`` is what Chromium sends for a form POST from a page under
    ``Referrer-Policy: no-referrer`` (the console's own pages), but also what a sandboxed
    frame sends: it counts only with ``Sec-Fetch-Site: same-origin`` beside it.

    Raises:
        CsrfRefused: the request came from another site.
    """
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin == "null":
        if site is None or site.lower() != "same-origin":
            raise CsrfRefused("opaque_origin", "the form was posted from an opaque origin")
    elif origin is not None and origin.lower() != _own_origin(request):
        raise CsrfRefused("cross_origin", "the form was posted from another origin")
    if site is not None and site.lower() != "same-origin":
        raise CsrfRefused("cross_site", "the form was posted from another site")
