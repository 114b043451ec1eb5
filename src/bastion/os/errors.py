"""Exceptions raised by :mod:`bastion.os`.

The tree::

    DeviceOsError
    ├── ConfigError               the device config is missing, unreadable or invalid
    ├── StateError                the OS state directory cannot be read or written
    ├── MonitorFailedError        the monitor could not be reached or refused (fatal)
    ├── SandboxUnavailableError   a program or kernel feature a sandbox needs is missing
    ├── LocalApiRefusedError      a local device API request (development mode, sideloading,
    │                             app start/stop/logs) was refused: ``reason``
    └── AttestationError          an attestation attempt failed (retried with backoff)
        ├── AttestationRefusedError   the service said no: ``status``, ``code``, ``detail``
        ├── ServiceProtocolError      the service sent something malformed or oversized
        └── ServiceUnreachableError   transport failed: DNS, connect, TLS, timeout, 5xx

Messages never carry key material.
"""

from __future__ import annotations

__all__ = [
    "AttestationError",
    "AttestationRefusedError",
    "ConfigError",
    "DeviceOsError",
    "LocalApiRefusedError",
    "MonitorFailedError",
    "SandboxUnavailableError",
    "ServiceProtocolError",
    "ServiceUnreachableError",
    "StateError",
]


class DeviceOsError(Exception):
    """Root of all errors raised by :mod:`bastion.os`."""


class ConfigError(DeviceOsError):
    """The device configuration is missing or invalid."""


class StateError(DeviceOsError):
    """The OS state directory cannot be read or written."""


class MonitorFailedError(DeviceOsError):
    """The security monitor could not serve a request; the OS cannot attest without it."""


class SandboxUnavailableError(DeviceOsError):
    """A program or kernel feature that a sandbox needs is missing; nothing runs without it.

    Attributes:
        missing: what is missing (``bwrap``, ``setpriv``, ...).
        fix: what to do about it (a command to run), for the CLI's hint.
    """

    def __init__(self, missing: str, fix: str) -> None:
        super().__init__(f"the sandbox needs {missing}, which is missing")
        self.missing = missing
        self.fix = fix


class LocalApiRefusedError(DeviceOsError):
    """A request of the local device API was refused.

    Attributes:
        reason: a stable code: ``no_capability``, ``capability`` (the file failed
            a check; see the message), ``not_attested`` (no tenant CA chain yet),
            ``signature``, ``format``, ``component``, ``version``, ``too_large``,
            ``unknown_app``, ``install``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AttestationError(DeviceOsError):
    """One attestation attempt failed."""

    #: A stable reason code recorded in the OS state.
    code: str = "attestation_failed"


class AttestationRefusedError(AttestationError):
    """The service refused the device (a 4xx answer).

    Attributes:
        status: the HTTP status.
        code: the service's error code (docs/api.md), e.g. ``device_unclaimed``.
        detail: the service's explanation.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"the service refused attestation ({code}): {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ServiceProtocolError(AttestationError):
    """The service's answer was malformed, oversized or inconsistent."""

    code = "bad_service_response"


class ServiceUnreachableError(AttestationError):
    """The service could not be reached, timed out, or failed (5xx)."""

    code = "service_unreachable"
