"""Exceptions raised by :mod:`bastion.os.updates` and :mod:`bastion.os.apps`.

They extend the OS's tree (:mod:`bastion.os.errors`)::

    DeviceOsError
    └── UpdateError                  one update step failed
        ├── UpdateRefusedError       the repository or an image failed a check; never retried
        │                            for the same target (``reason``: rollback, freeze,
        │                            mix-and-match, hash, length, signature, component,
        │                            version, tuf, bad-pointer, peripheral, core)
        ├── UpdateUnavailableError   transient: transport failed, timed out, HTTP error;
        │                            retried at the next check
        └── UpdateFailedError        a local step failed: unpack, staging, the monitor
                                     refused to install, an app would not start

ngclient's ``RepositoryError`` becomes :class:`UpdateRefusedError` and its
``DownloadError`` becomes :class:`UpdateUnavailableError` (except an over-long
download, which is the endless-data attack and is refused), at the boundary in
:mod:`bastion.os.updates.tuf_client`. Messages never carry key material.
"""

from __future__ import annotations

from bastion.os.errors import DeviceOsError

__all__ = ["UpdateError", "UpdateFailedError", "UpdateRefusedError", "UpdateUnavailableError"]


class UpdateError(DeviceOsError):
    """Root of the update agent's and app manager's errors."""

    #: A stable reason code for events and summaries.
    reason: str = "update_error"


class UpdateRefusedError(UpdateError):
    """Something the service sent failed a security check.

    Attributes:
        reason: ``rollback``, ``freeze``, ``mix-and-match``, ``hash``, ``length``,
            ``signature``, ``component``, ``version``, ``tuf``, ``bad-pointer``,
            ``peripheral`` (an app's peripheral is unknown or held by another app) or
            ``core`` (no free real-time core).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"refused ({reason}): {message}")
        self.reason = reason


class UpdateUnavailableError(UpdateError):
    """The repository could not be reached or sent an HTTP error; try again later."""

    reason = "unavailable"


class UpdateFailedError(UpdateError):
    """A local step of an update failed."""

    reason = "failed"
