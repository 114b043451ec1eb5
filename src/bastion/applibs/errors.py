"""The errors applibs raises.

Tree::

    ApplibsError                   anything applibs raises
    ├── NotConnectedError          no OS socket (not running on a Bastion device)
    ├── TransportError             the socket to the OS failed or the OS sent garbage
    └── RequestError               the OS refused or failed the request (``code``)
        ├── PermissionDeniedError  the manifest lacks the capability (``capability``)
        ├── QuotaExceededError     a MutableStorage or other bound would be passed
        ├── InvalidArgumentError   the request's arguments are wrong
        └── NotFoundError          the named thing (file, peripheral, app) does not exist
"""

from __future__ import annotations

__all__ = [
    "ApplibsError",
    "InvalidArgumentError",
    "NotConnectedError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RequestError",
    "TransportError",
    "error_for",
]


class ApplibsError(Exception):
    """Base of everything applibs raises."""


class NotConnectedError(ApplibsError):
    """The app has no socket to the OS (``BASTION_APPLIBS_FD`` is unset or bad)."""


class TransportError(ApplibsError):
    """The socket to the OS failed, or the OS sent a malformed reply."""


class RequestError(ApplibsError):
    """The OS refused or failed the request.

    Attributes:
        code: the OS's error code (``permission_denied``, ``bad_request``, ...).
        capability: the manifest capability involved, if any.
    """

    def __init__(self, code: str, message: str, capability: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.capability = capability


class PermissionDeniedError(RequestError, PermissionError):
    """The app's manifest does not grant what the request needs; ``capability`` names it."""


class QuotaExceededError(RequestError):
    """The request would pass a bound (MutableStorage SizeKB, a count)."""


class InvalidArgumentError(RequestError, ValueError):
    """The request's arguments are wrong."""


class NotFoundError(RequestError, LookupError):
    """The named object does not exist."""


_BY_CODE: dict[str, type[RequestError]] = {
    "permission_denied": PermissionDeniedError,
    "quota_exceeded": QuotaExceededError,
    "bad_request": InvalidArgumentError,
    "not_found": NotFoundError,
}


def error_for(code: str, message: str, capability: str | None = None) -> RequestError:
    """The exception for an error reply."""
    return _BY_CODE.get(code, RequestError)(code, message, capability)
