"""Exceptions raised by :mod:`bastion.boot`.

Two roots: a failed boot, and a refused provisioning step (vendor set-up,
manufacture, flashing), which happen on the factory floor or the bench, not at
boot. The tree::

    BootError                         the chip does not start the OS; it enters recovery
    ├── ChipNotReadyError             no chip, fuses not secured, identity files broken
    ├── BootloaderVerificationError   ROM: the bootloader is missing, malformed, not
    │                                 signed by the fused boot key, or rolled back
    ├── BootConfigError               the verified boot configuration is unusable
    ├── BootStageError                the bootloader stage process failed to report: it
    │                                 crashed, hung, or answered out of protocol
    ├── NoOsError                     bootloader: no active slot, or the slot is empty
    └── OsVerificationError           bootloader: the OS image is malformed, not signed
        │                             by a pinned OS-publisher key, or does not unpack
        └── RollbackError             its security version is below the fuse counter

    ProvisioningError
    ├── VendorError                   vendor directory missing, incomplete or exists
    ├── ManufactureError              the device directory already holds a chip, ...
    └── FlashImageError               the image is refused for this device (signature,
        │                             type, rollback counter, not newer than the running OS)
        ├── SlotStateError            the A/B state forbids the step: a trial is armed or
        │                             running, or confirming a boot that is not a trial
        └── StagingPathError          the staged image is not a regular file inside the
                                      device's staging directory

Every :class:`BootError` names the ``stage`` ("rom" or "bootloader") and the
``check`` that failed; ``str(error)`` is a sentence a user can act on. No error
carries secret material.
"""

from __future__ import annotations

__all__ = [
    "BootConfigError",
    "BootError",
    "BootStageError",
    "BootloaderVerificationError",
    "ChipNotReadyError",
    "FlashImageError",
    "ManufactureError",
    "NoOsError",
    "OsVerificationError",
    "ProvisioningError",
    "RollbackError",
    "SlotStateError",
    "StagingPathError",
    "VendorError",
]


class BootError(Exception):
    """A boot stage refused to continue.

    Attributes:
        stage: "rom" or "bootloader".
        check: a short name of the failed check, e.g. "signature", "rollback".
        reason: what failed and what to do, for the user.
    """

    stage = "boot"

    def __init__(self, reason: str, *, check: str, stage: str | None = None) -> None:
        """Record the failed ``check`` and a human-readable ``reason``."""
        self.stage = stage or type(self).stage
        self.check = check
        self.reason = reason
        super().__init__(f"{self.stage}: {reason}")


class ChipNotReadyError(BootError):
    """The chip is not manufactured and secured, or its identity is broken."""

    stage = "rom"


class BootloaderVerificationError(BootError):
    """The ROM refused the bootloader."""

    stage = "rom"


class BootConfigError(BootError):
    """The bootloader's signed boot configuration is unusable."""

    stage = "bootloader"


class BootStageError(BootError):
    """The bootloader stage process did not report a result or a boot error."""

    stage = "bootloader"


class NoOsError(BootError):
    """There is no OS to boot."""

    stage = "bootloader"


class OsVerificationError(BootError):
    """The bootloader refused the OS image in the active slot."""

    stage = "bootloader"


class RollbackError(OsVerificationError):
    """The OS image's security version is below the anti-rollback counter."""


class ProvisioningError(Exception):
    """A vendor, manufacture or flash step was refused."""


class VendorError(ProvisioningError):
    """The vendor directory is missing, incomplete, or would be overwritten."""


class ManufactureError(ProvisioningError):
    """A chip cannot be manufactured here."""


class FlashImageError(ProvisioningError):
    """The image is refused for this device."""


class SlotStateError(FlashImageError):
    """The A/B boot state forbids this install or confirmation."""


class StagingPathError(FlashImageError):
    """The staged image path is outside the staging directory or not a regular file."""
