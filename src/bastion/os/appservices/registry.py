"""Types of the applibs choke point: operations, the calling app, replies and refusals.

An area of the device (storage, network, peripherals, ...) defines its
operations in its own module as a tuple ``OPERATIONS`` of :class:`Operation`,
and :mod:`bastion.os.appservices.table` joins them into the one table. Each
operation names the manifest capability it needs (Azure Sphere's spelling); the
server refuses a request whose app lacks it before the handler runs, and a
handler's own finer check (a host not in ``AllowedConnections``, a peripheral
not declared) raises :class:`DeniedError`. Every refusal is recorded as an
``app_denied`` security event.

Example::

    def _write(ctx: AppContext, args: Args) -> Reply:
        store = ctx.service(StorageService)
        ...
        return Reply({"size": n})

    OPERATIONS = (Operation("storage.write", _write, capability="MutableStorage"),)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bastion.images.manifest import AppManifest, Capabilities

__all__ = [
    "AppContext",
    "Args",
    "BadRequestError",
    "DeniedError",
    "Handler",
    "NotFoundError",
    "OpError",
    "Operation",
    "QuotaExceededError",
    "Reply",
    "UnavailableError",
    "arg_b64",
    "arg_int",
    "arg_str",
    "b64",
    "has_capability",
]

T = TypeVar("T")
Args = Mapping[str, Any]


class OpError(Exception):
    """A request failed; the app gets ``code`` and the message (never internals).

    Attributes:
        code: the wire error code.
        capability: the capability involved, if any.
    """

    code = "failed"

    def __init__(self, message: str, *, capability: str | None = None) -> None:
        super().__init__(message)
        self.capability = capability


class DeniedError(OpError):
    """The app's manifest does not grant this; recorded as a security event."""

    code = "permission_denied"


class BadRequestError(OpError):
    """The arguments are malformed or out of bounds."""

    code = "bad_request"


class NotFoundError(OpError):
    """The named object does not exist."""

    code = "not_found"


class QuotaExceededError(OpError):
    """The request would pass a bound the app was given."""

    code = "quota_exceeded"


class UnavailableError(OpError):
    """The device cannot do this now (no certificate yet, peripheral busy...)."""

    code = "unavailable"


@dataclass
class Reply:
    """A handler's answer: a JSON-able result and fds to pass (the server closes them after sending)."""

    result: dict[str, Any] = field(default_factory=dict)
    fds: list[int] = field(default_factory=list)


@dataclass
class AppContext:
    """The app a request comes from, and the OS services the handlers use.

    Attributes:
        component_id: the app's component ID.
        version: the running version.
        manifest: its validated manifest (the source of every grant).
        storage_dir: its MutableStorage directory on the OS side.
        services: OS services by type (see :meth:`service`).
        record: records a security event: ``record(kind, detail)``.
    """

    component_id: str
    version: str
    manifest: AppManifest
    storage_dir: Path
    services: Mapping[type, object] = field(default_factory=dict)
    record: Callable[[str, str], None] = field(default=lambda kind, detail: None)

    @property
    def capabilities(self) -> Capabilities:
        """The manifest's capabilities."""
        return self.manifest.capabilities

    @property
    def realtime(self) -> bool:
        """Whether the app runs on a real-time core."""
        return self.manifest.application_type == "RealTimeCapable"

    def service(self, kind: type[T]) -> T:
        """The OS service of type ``kind``.

        Raises:
            UnavailableError: the OS runs without it.
        """
        value = self.services.get(kind)
        if not isinstance(value, kind):
            raise UnavailableError(f"the device has no {kind.__name__}")
        return value


Handler = Callable[[AppContext, Args], Reply]

#: Manifest capability name -> attribute of :class:`Capabilities`.
_CAPABILITY_FIELDS: dict[str, str] = {
    "AllowedConnections": "allowed_connections",
    "AllowedTcpServerPorts": "allowed_tcp_server_ports",
    "AllowedUdpServerPorts": "allowed_udp_server_ports",
    "AllowedApplicationConnections": "allowed_application_connections",
    "Gpio": "gpio",
    "Uart": "uart",
    "I2cMaster": "i2c_master",
    "SpiMaster": "spi_master",
    "Adc": "adc",
    "Pwm": "pwm",
    "MutableStorage": "mutable_storage_kb",
    "DeviceAuthentication": "device_authentication",
    "CertStore": "cert_store",
    "PowerControls": "power_controls",
    "SystemTime": "system_time",
    "SoftwareUpdateDeferral": "software_update_deferral",
    "SystemEventNotifications": "system_event_notifications",
}


def has_capability(capabilities: Capabilities, name: str) -> bool:
    """Whether the manifest grants capability ``name`` at all (a non-empty list, true, a value).

    Raises:
        KeyError: ``name`` is not a capability name (a programming error in a table).
    """
    value = getattr(capabilities, _CAPABILITY_FIELDS[name])
    if isinstance(value, bool):
        return value
    if isinstance(value, tuple):
        return len(value) > 0
    return value is not None


@dataclass(frozen=True)
class Operation:
    """One request an app can make.

    Attributes:
        name: the wire name, ``area.verb``.
        handler: does the work; raises :class:`OpError` subclasses.
        capability: the manifest capability it needs, or ``None`` for one every app has.
        realtime: whether a real-time app may call it (they get only their
            peripherals and inter-core messages).
        takes_fds: how many fds the request may carry (more are refused).
    """

    name: str
    handler: Handler
    capability: str | None
    realtime: bool = False
    takes_fds: int = 0

    def __post_init__(self) -> None:
        if self.capability is not None and self.capability not in _CAPABILITY_FIELDS:
            raise ValueError(f"operation {self.name}: unknown capability {self.capability!r}")


def arg_str(args: Args, name: str, *, max_chars: int, optional: bool = False) -> str:
    """A string argument, bounded.

    Raises:
        BadRequestError: missing, not a string, or too long.
    """
    value = args.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise BadRequestError(f"argument {name!r} must be a string")
    if len(value) > max_chars:
        raise BadRequestError(f"argument {name!r} is over {max_chars} characters")
    return value


def arg_int(args: Args, name: str, *, low: int, high: int, default: int | None = None) -> int:
    """An integer argument in ``[low, high]``.

    Raises:
        BadRequestError: missing, not an integer, or out of range.
    """
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequestError(f"argument {name!r} must be an integer")
    if not low <= value <= high:
        raise BadRequestError(f"argument {name!r} must be in {low}..{high}")
    return value


def arg_b64(args: Args, name: str, *, max_bytes: int) -> bytes:
    """A bytes argument sent as base64 (field ``<name>_b64``), bounded.

    Raises:
        BadRequestError: missing, not base64, or too large.
    """
    value = args.get(f"{name}_b64")
    if not isinstance(value, str):
        raise BadRequestError(f"argument {name + '_b64'!r} must be base64 text")
    if len(value) > (max_bytes + 2) // 3 * 4:
        raise BadRequestError(f"argument {name!r} is over {max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(f"argument {name + '_b64'!r} is not base64") from exc
    if len(data) > max_bytes:
        raise BadRequestError(f"argument {name!r} is over {max_bytes} bytes")
    return data


def b64(data: bytes) -> str:
    """Bytes as the base64 text a reply carries."""
    return base64.b64encode(data).decode("ascii")
