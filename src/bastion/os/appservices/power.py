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
granted request is recorded as an ``app_power`` event naming the app. A reboot
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

from bastion.os.appservices.registry import AppContext, Args, BadRequestError, DeniedError, Operation, Reply, arg_str

__all__ = ["APP_POWER_EVENT", "CAPABILITY", "OPERATIONS", "POWER_PROFILES", "PowerService"]

CAPABILITY = "PowerControls"
#: The event kind of a granted power request.
APP_POWER_EVENT = "app_power"
#: Azure Sphere's system power profiles.
POWER_PROFILES = ("PowerSaver", "Balanced", "HighPerformance")


class PowerService:
    """Carries the apps' power requests to the OS runtime.

    Args:
        stop: the runtime's stop event (set to end the OS).
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
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

    def set_power_profile(self, profile: str) -> None:
        """Record the power profile.

        Raises:
            BadRequestError: not one of :data:`POWER_PROFILES`.
        """
        if profile not in POWER_PROFILES:
            raise BadRequestError(f"the power profile is one of {', '.join(POWER_PROFILES)}")
        with self._lock:
            self.profile = profile


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
    service = ctx.service(PowerService)
    service.set_power_profile(profile)
    ctx.record(APP_POWER_EVENT, f"SetPowerProfile: {profile}")
    return Reply({"profile": profile})


OPERATIONS = (
    Operation("power.reboot", _reboot, capability=CAPABILITY),
    Operation("power.shutdown", _shutdown, capability=CAPABILITY),
    Operation("power.profile", _profile, capability=CAPABILITY),
)
