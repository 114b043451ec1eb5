"""The OS services the applibs handlers use, built once per boot.

Each area adds its service here and nowhere else, so the runtime wires every
area the same way::

    services = AppServices()
    services.add(storage_service)
    ctx = AppContext(..., services=services.mapping)
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["AppServices"]


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
