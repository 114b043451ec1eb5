"""Rendering console pages: Jinja2 with autoescape on for every template and StrictUndefined.

Example:
    >>> render(request, "pages/devices.html", {"rows": rows})  # doctest: +SKIP

Every template sees ``me`` (the :class:`~bastion.service.console.deps.ConsolePrincipal`,
or None before sign-in), ``csrf_token`` (the session's, or "") and ``nav`` (the
pages the operator may open), on top of the page's own context.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from bastion.service.console import charts
from bastion.service.console.headers import apply_page_headers
from bastion.service.console.static import static_url

__all__ = ["TEMPLATE_DIR", "NavItem", "environment", "render", "render_fragment"]

TEMPLATE_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class NavItem:
    """One entry of the console's navigation: a page module's ``NAV``."""

    label: str
    path: str
    role: str = "reader"


def _when(value: dt.datetime | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@functools.cache
def environment() -> jinja2.Environment:
    """The console's one Jinja2 environment (built on first use, not at import)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every template, whatever its name: a device name of <script> is text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["bar_chart"] = charts.bar_chart
    env.globals["time_series"] = charts.time_series
    env.globals["sparkline"] = charts.sparkline
    env.globals["day_window"] = charts.day_window
    env.globals["static_url"] = static_url
    return env


def _nav(me: Any) -> list[NavItem]:
    from bastion.service.console.routes import nav_items  # the page modules import this module

    if me is None:
        return []
    return [item for item in nav_items() if me.can(item.role)]


def _context(request: Request, ctx: Mapping[str, Any]) -> dict[str, Any]:
    me = getattr(request.state, "console", None)
    base: dict[str, Any] = {
        "me": me,
        "csrf_token": me.csrf_token if me is not None else "",
        "nav": _nav(me),
        "path": request.url.path,
    }
    base.update(ctx)
    return base


def render(request: Request, template: str, ctx: Mapping[str, Any], status: int = 200) -> HTMLResponse:
    """Render a page template with the console's context, security headers set."""
    html = environment().get_template(template).render(_context(request, ctx))
    response = HTMLResponse(html, status_code=status)
    apply_page_headers(response)
    return response


def render_fragment(request: Request, template: str, ctx: Mapping[str, Any], status: int = 200) -> HTMLResponse:
    """Render a fragment (a part of a page that htmx swaps in); the same context as :func:`render`."""
    return render(request, template, ctx, status=status)
