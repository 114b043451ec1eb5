"""Every OS service the capability handlers use, built once per boot (the runtime and tests build them alike).

Example::

    services = AppServices()
    caps = capability_services(services, state_dir=state_dir.path, manifest_of=lookup, stop=stop)
    manager.watchdog = caps.watchdog
    AppManager(..., services=services.mapping)
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.images.manifest import AppManifest
from bastion.os.appservices.application import MessageService
from bastion.os.appservices.certstore import CertStoreService
from bastion.os.appservices.channel import ChannelService
from bastion.os.appservices.clock import OsClock, utcnow
from bastion.os.appservices.power import PowerService
from bastion.os.appservices.rtc import DeviceClockService
from bastion.os.appservices.services import AppServices
from bastion.os.appservices.storage import StorageService
from bastion.os.appservices.sysevent import SysEventService
from bastion.os.appservices.watchdog import WatchdogService

__all__ = ["CERTSTORE_DIRNAME", "CLOCK_FILE", "SYSEVENTS_FILE", "CapabilityServices", "capability_services"]

#: Files of these services under the OS state directory.
SYSEVENTS_FILE = "sysevents.json"
CLOCK_FILE = "clock.json"
CERTSTORE_DIRNAME = "certstore"


@dataclass(frozen=True)
class CapabilityServices:
    """The services, typed (they are also registered in the ``AppServices`` given)."""

    storage: StorageService
    channels: ChannelService
    messages: MessageService
    sysevents: SysEventService
    power: PowerService
    clock: DeviceClockService
    certstore: CertStoreService
    watchdog: WatchdogService

    def close(self) -> None:
        """Close what holds threads (the apps' channels)."""
        self.channels.close_all()


def capability_services(
    services: AppServices,
    *,
    state_dir: Path,
    manifest_of: Callable[[str], AppManifest | None],
    stop: threading.Event,
    clock: Callable[[], dt.datetime] = utcnow,
    not_before: Callable[[], dt.datetime | None] = lambda: None,
) -> CapabilityServices:
    """Build the services and register each in ``services``.

    Args:
        services: the registry the app contexts read (``AppServices.mapping``).
        state_dir: the OS state directory (deferral requests, device clock, cert stores).
        manifest_of: the installed manifest of a component ID (app-to-app messages check both).
        stop: the runtime's stop event (an app's reboot or power-down sets it).
        clock: the OS clock.
        not_before: the device certificate's notBefore, if any (the device clock is never set before it).
    """
    built = CapabilityServices(
        storage=StorageService(),
        channels=ChannelService(),
        messages=MessageService(manifest_of),
        sysevents=SysEventService(state_dir / SYSEVENTS_FILE),
        power=PowerService(stop),
        clock=DeviceClockService(state_dir / CLOCK_FILE, not_before=not_before),
        certstore=CertStoreService(state_dir / CERTSTORE_DIRNAME),
        watchdog=WatchdogService(),
    )
    services.add(OsClock(clock))
    for service in (
        built.storage,
        built.channels,
        built.messages,
        built.sysevents,
        built.power,
        built.clock,
        built.certstore,
        built.watchdog,
    ):
        services.add(service)
    return built
