"""The operator console: server-rendered pages at ``/console`` (issue 9 §1, ADR 0022).

Example:
    >>> app.include_router(console_router())  # doctest: +SKIP

It is part of the service: pages call the slices' domain functions in-process,
with the same role rules as the API, behind a session cookie instead of a bearer
token. See :mod:`bastion.service.console.session` for sessions,
:mod:`~bastion.service.console.csrf` for CSRF and
:mod:`~bastion.service.console.headers` for the Content-Security-Policy.
"""

from __future__ import annotations

from bastion.service.console.routes import console_router

__all__ = ["console_router"]
