"""Exceptions raised by :mod:`bastion.service.tuf`.

Each class also derives from the service error it maps to, so the web layer
and the CLI handle it like any other :class:`~bastion.service.errors.ServiceError`.

The tree::

    TufError (ServiceError)
    ├── InvalidGroupId       not a canonical lowercase UUID string (also InvalidRequest)
    ├── InvalidTarget        a TargetSpec is malformed, duplicated, too large, or its
    │                        blob is missing or has another length (also InvalidRequest)
    ├── UnknownGroup         no repository exists for that group yet (also NotFound)
    ├── TufKeyError          a sealed online key does not open under the master key
    │                        (also SealedKeyError): fail closed, never re-create keys
    └── CorruptRepository    the files of a group's repository are missing or unreadable
"""

from __future__ import annotations

from bastion.service.errors import InvalidRequest, NotFound, SealedKeyError, ServiceError

__all__ = ["CorruptRepository", "InvalidGroupId", "InvalidTarget", "TufError", "TufKeyError", "UnknownGroup"]


class TufError(ServiceError):
    """Root of all errors raised by :mod:`bastion.service.tuf`."""

    code = "tuf_error"


class InvalidGroupId(TufError, InvalidRequest):  # noqa: N818 - named like the service tree's conditions
    """A group id is not a canonical lowercase UUID string."""

    code = "invalid_group_id"


class InvalidTarget(TufError, InvalidRequest):  # noqa: N818 - named like the service tree's conditions
    """A target specification cannot be published."""

    code = "invalid_target"


class UnknownGroup(TufError, NotFound):  # noqa: N818 - named like the service tree's conditions
    """The group has no TUF repository yet (nothing was published for it)."""

    code = "unknown_group"


class TufKeyError(TufError, SealedKeyError):
    """A sealed online key does not open: wrong master key, or the key file was tampered with."""

    code = "tuf_key_error"


class CorruptRepository(TufError):  # noqa: N818 - named like the service tree's conditions
    """The repository files on disk are missing, unreadable or inconsistent."""

    code = "corrupt_repository"
