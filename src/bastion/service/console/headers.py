"""Security headers of every console response: a strict CSP and no caching of pages.

The console has no inline script or style, and loads nothing from another
origin (issue 9 §1: self-hosted and offline), so the policy allows only its own
files. htmx is configured through ``<meta name="htmx-config">`` with eval, script
tags and indicator styles off, so it needs no ``unsafe-*`` source either.
"""

from __future__ import annotations

from starlette.responses import Response

__all__ = ["CSP", "PAGE_HEADERS", "STATIC_HEADERS", "apply_page_headers", "apply_static_headers"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_COMMON = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Headers of every page, fragment, redirect and refusal: nothing of a signed-in page is cached.
PAGE_HEADERS = {**_COMMON, "Cache-Control": "no-store"}
#: Headers of the console's own static files (they hold nothing private).
STATIC_HEADERS = {**_COMMON, "Cache-Control": "public, max-age=3600"}


def apply_page_headers(response: Response) -> Response:
    """Set :data:`PAGE_HEADERS` on a response and return it."""
    response.headers.update(PAGE_HEADERS)
    return response


def apply_static_headers(response: Response) -> Response:
    """Set :data:`STATIC_HEADERS` on a response and return it."""
    response.headers.update(STATIC_HEADERS)
    return response
