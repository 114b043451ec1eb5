"""PowerControls: reboot or power down the device, choose a power profile.

The manifest lists what the app may do: ``"PowerControls": ["ForceReboot",
"ForcePowerDown", "SetPowerProfile"]`` (Azure Sphere's
``PowerManagement_ForceSystemReboot``, ``PowerManagement_ForceSystemPowerDown``
and ``PowerManagement_SetSystemPowerProfile``). Each call the manifest does not
allow raises :class:`~bastion.applibs.errors.PermissionDeniedError` naming
``PowerControls``. A reboot or power-down stops every app, this one included,
soon after the call returns.

Example::

    from bastion.applibs import powermanagement
    powermanagement.set_system_power_profile("PowerSaver")
    powermanagement.force_system_reboot()
"""

from __future__ import annotations

from bastion.applibs._client import connection

__all__ = ["POWER_PROFILES", "force_system_power_down", "force_system_reboot", "set_system_power_profile"]

#: The profiles :func:`set_system_power_profile` accepts.
POWER_PROFILES = ("PowerSaver", "Balanced", "HighPerformance")


def force_system_reboot() -> None:
    """Reboot the device (needs ``ForceReboot``)."""
    connection().call("power.reboot")


def force_system_power_down() -> None:
    """Power the device down (needs ``ForcePowerDown``); the emulated device stays off until started again."""
    connection().call("power.shutdown")


def set_system_power_profile(profile: str) -> None:
    """Choose a power profile from :data:`POWER_PROFILES` (needs ``SetPowerProfile``)."""
    connection().call("power.profile", {"profile": profile})
