"""The console's router: every page module's ``router``, the static files and the home redirect.

A page module (in :data:`PAGE_MODULES`) defines ``router = page_router()`` and
may define ``NAV``, a :class:`~bastion.service.console.render.NavItem` (or a
tuple of them) for the navigation bar, in the order of :data:`PAGE_MODULES`.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from bastion.service.console import static
from bastion.service.console.deps import ConsoleReaderDep, ConsoleRoute, page_router
from bastion.service.console.render import NavItem, render

__all__ = ["CONSOLE_PREFIX", "PAGE_MODULES", "console_router", "nav_items"]

CONSOLE_PREFIX = "/console"

#: The page modules, in navigation order (each has a ``router``; ``NAV`` is optional).
PAGE_MODULES: tuple[str, ...] = (
    "bastion.service.console.pages.signin",
    "bastion.service.console.pages.fleet",
    "bastion.service.console.pages.devices",
    "bastion.service.console.pages.products",
    "bastion.service.console.pages.groups",
    "bastion.service.console.pages.deployments",
    "bastion.service.console.pages.osfeeds",
    "bastion.service.console.pages.buckets",
    "bastion.service.console.pages.audit",
    "bastion.service.console.pages.tokens",
)


@functools.cache
def _modules() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(name) for name in PAGE_MODULES)


def nav_items() -> tuple[NavItem, ...]:
    """The navigation entries of every page module, in :data:`PAGE_MODULES` order."""
    items: list[NavItem] = []
    for module in _modules():
        nav = getattr(module, "NAV", None)
        if isinstance(nav, NavItem):
            items.append(nav)
        elif isinstance(nav, tuple):
            items.extend(n for n in nav if isinstance(n, NavItem))
    return tuple(items)


home = page_router()


@home.get("/", include_in_schema=False)
def console_home(request: Request, me: ConsoleReaderDep) -> HTMLResponse:
    """The console's front door: the pages the operator may open (else the sign-in page, by the dependency)."""
    return render(request, "home.html", {"tenant_name": me.principal.tenant_name})


def console_router() -> APIRouter:
    """The whole console, to mount at the app's root (its paths start with ``/console``).

    Raises:
        TypeError: a page route is not a :class:`ConsoleRoute` (its refusals would be JSON, without the CSP).
    """
    router = APIRouter(include_in_schema=False)  # each page router carries the /console prefix itself
    router.include_router(home)
    router.include_router(static.router)
    for module in _modules():
        page: APIRouter = module.router
        for route in page.routes:
            if not isinstance(route, ConsoleRoute):
                raise TypeError(f"{module.__name__}: route {getattr(route, 'path', route)} is not a ConsoleRoute")
        router.include_router(page, include_in_schema=False)
    return router
