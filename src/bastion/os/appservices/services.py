"""The OS services the applibs handlers use, built once per boot.

Each area adds its service here and nowhere else, so the runtime wires every
area the same way::

    services = AppServices()
    services.add(storage_service)
    ctx = AppContext(..., services=services.mapping)

A service that holds something for an app (open peripherals, a UART bridge)
defines ``app_stopped(component_id)``; the app manager calls
:func:`notify_app_stopped` each time an app's run ends, so it is released.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["AppServices", "notify_app_stopped"]

_log = logging.getLogger("bastion.os.appservices")


def notify_app_stopped(services: Mapping[type, object], component_id: str) -> None:
    """Tell every service with an ``app_stopped`` hook that an app's run ended (a failing hook is logged)."""
    for service in services.values():
        hook = getattr(service, "app_stopped", None)
        if callable(hook):
            try:
                hook(component_id)
            except Exception:  # noqa: BLE001 - one service's failure must not keep the others' resources
                _log.exception("%s.app_stopped failed for %s", type(service).__name__, component_id)


class AppServices:
    """A registry of OS services by type (one instance of each)."""

    def __init__(self) -> None:
        self._by_type: dict[type, object] = {}

    def add(self, service: object) -> None:
        """Register ``service`` under its own type.

        Raises:
            ValueError: a service of that type is already registered.
        """
        kind = type(service)
        if kind in self._by_type:
            raise ValueError(f"a {kind.__name__} is already registered")
        self._by_type[kind] = service

    @property
    def mapping(self) -> Mapping[type, object]:
        """The services, for :class:`bastion.os.appservices.registry.AppContext`."""
        return self._by_type
