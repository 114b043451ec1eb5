"""The library that apps import: their only way to reach the device.

It talks to the OS over the unix socket the OS passes into the app's sandbox
(``BASTION_APPLIBS_FD``) and imports nothing else of Bastion, so it runs in a
sandbox that holds only the standard library and this package.

Modules, one per manifest capability (see docs/compartments.md, "Capability reference"):
:mod:`~bastion.applibs.storage` (MutableStorage), :mod:`~bastion.applibs.application`
(AllowedApplicationConnections), :mod:`~bastion.applibs.sysevent`
(SystemEventNotifications, SoftwareUpdateDeferral), :mod:`~bastion.applibs.powermanagement`
(PowerControls), :mod:`~bastion.applibs.rtc` (SystemTime), :mod:`~bastion.applibs.certstore`
(CertStore) and :mod:`~bastion.applibs.watchdog` (every app).

Example::

    from bastion import applibs
    print(applibs.whoami()["component_id"])
"""

from __future__ import annotations

from typing import Any

from bastion.applibs._client import ENV_FD, Connection, connection
from bastion.applibs.errors import (
    ApplibsError,
    InvalidArgumentError,
    NotConnectedError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RequestError,
    TransportError,
)

__all__ = [
    "ENV_FD",
    "ApplibsError",
    "Connection",
    "InvalidArgumentError",
    "NotConnectedError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RequestError",
    "TransportError",
    "connection",
    "ping",
    "whoami",
]


def whoami() -> dict[str, Any]:
    """The app's component ID, version and application type, as the OS knows them."""
    return connection().call("app.whoami")


def ping(echo: str = "") -> str:
    """One round trip to the OS; returns ``echo``."""
    return str(connection().call("app.ping", {"echo": echo}).get("echo", ""))
