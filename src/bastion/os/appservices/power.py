"""PowerControls: an app may reboot the device, power it down, or choose a power profile.

==================  ==================  ==========================================
op                  PowerControls item  effect
==================  ==================  ==========================================
``power.reboot``    ``ForceReboot``     the OS stops its apps and exits with
                                        ``EXIT_REBOOT``; ``device run`` boots again
``power.shutdown``  ``ForcePowerDown``  the OS stops its apps and exits with
                                        ``EXIT_OK``; ``device run`` stops the device
``power.profile``   ``SetPowerProfile`` ``profile``: one of :data:`POWER_PROFILES`;
                                        recorded (the emulated chip has no DVFS)
==================  ==================  ==========================================

The manifest must list the item (``"PowerControls": ["ForceReboot"]``); an op
whose item is missing is refused, names ``PowerControls`` and is recorded. Each
granted request is recorded as an ``app_power`` event naming the app (a profile
only when it changes, at most :data:`MAX_PROFILE_CHANGES` changes per app and boot). A reboot
loop (an app that reboots at every start) is bounded by ``device run``'s
``MAX_BOOTS_PER_RUN``. Unlike Azure Sphere's ``ForceSystemPowerDown(seconds)``
the emulated device does not wake by itself: ``bastion device run`` starts it again.

Example (OS side)::

    power = PowerService(stop)              # the runtime's stop event
    ...
    exit_code = EXIT_REBOOT if power.reboot_requested else EXIT_OK
"""

from __future__ import annotations

import threading

from bastion.os.appservices.registry import (
    AppContext,
    Args,
    BadRequestError,
    DeniedError,
    Operation,
    QuotaExceededError,
    Reply,
    arg_str,
)

__all__ = ["APP_POWER_EVENT", "CAPABILITY", "MAX_PROFILE_CHANGES", "OPERATIONS", "POWER_PROFILES", "PowerService"]

CAPABILITY = "PowerControls"
#: The event kind of a granted power request.
APP_POWER_EVENT = "app_power"
#: Profile changes one app may make per boot (each is an ``app_power`` event).
MAX_PROFILE_CHANGES = 32
#: Azure Sphere's system power profiles.
POWER_PROFILES = ("PowerSaver", "Balanced", "HighPerformance")


class PowerService:
    """Carries the apps' power requests to the OS runtime.

    Args:
        stop: the runtime's stop event (set to end the OS).
        max_profile_changes: profile changes one app may make per boot (each is an event).
    """

    def __init__(self, stop: threading.Event, *, max_profile_changes: int = MAX_PROFILE_CHANGES) -> None:
        self._stop = stop
        self.max_profile_changes = max_profile_changes
        self._changes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.reboot_requested = False
        self.power_down_requested = False
        self.profile = "Balanced"
        #: The component ID of the app that asked the OS to stop, if any.
        self.requested_by: str | None = None

    def force_reboot(self, component_id: str) -> None:
        """Stop the OS so that the device boots again."""
        with self._lock:
            if not self.power_down_requested:
                self.reboot_requested = True
                self.requested_by = self.requested_by or component_id
        self._stop.set()

    def force_power_down(self, component_id: str) -> None:
        """Stop the OS and the device (a power-down wins over a reboot)."""
        with self._lock:
            self.power_down_requested, self.reboot_requested = True, False
            self.requested_by = component_id
        self._stop.set()

    def set_power_profile(self, profile: str, component_id: str = "") -> bool:
        """Set the power profile; returns whether it changed (only a change is recorded).

        Raises:
            BadRequestError: not one of :data:`POWER_PROFILES`.
            QuotaExceededError: the app changed it :attr:`max_profile_changes` times since boot.
        """
        if profile not in POWER_PROFILES:
            raise BadRequestError(f"the power profile is one of {', '.join(POWER_PROFILES)}")
        with self._lock:
            if profile == self.profile:
                return False
            if self._changes.get(component_id, 0) >= self.max_profile_changes:
                raise QuotaExceededError(
                    f"the app changed the power profile {self.max_profile_changes} times since boot, the most it may"
                )
            self._changes[component_id] = self._changes.get(component_id, 0) + 1
            self.profile = profile
            return True


def _require(ctx: AppContext, item: str) -> None:
    if item not in ctx.capabilities.power_controls:
        raise DeniedError(f"the app manifest's PowerControls does not list {item}", capability=CAPABILITY)


def _reboot(ctx: AppContext, args: Args) -> Reply:
    del args
    _require(ctx, "ForceReboot")
    ctx.record(APP_POWER_EVENT, "ForceReboot: the device reboots")
    ctx.service(PowerService).force_reboot(ctx.component_id)
    return Reply({})


def _shutdown(ctx: AppContext, args: Args) -> Reply:
    del args
    _require(ctx, "ForcePowerDown")
    ctx.record(APP_POWER_EVENT, "ForcePowerDown: the device powers down")
    ctx.service(PowerService).force_power_down(ctx.component_id)
    return Reply({})


def _profile(ctx: AppContext, args: Args) -> Reply:
    _require(ctx, "SetPowerProfile")
    profile = arg_str(args, "profile", max_chars=32)
    if ctx.service(PowerService).set_power_profile(profile, ctx.component_id):
        ctx.record(APP_POWER_EVENT, f"SetPowerProfile: {profile}")
    return Reply({"profile": profile})


OPERATIONS = (
    Operation("power.reboot", _reboot, capability=CAPABILITY),
    Operation("power.shutdown", _shutdown, capability=CAPABILITY),
    Operation("power.profile", _profile, capability=CAPABILITY),
)
