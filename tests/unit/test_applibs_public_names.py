"""Pin the public names of the applibs capability modules (app side and OS side)."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "bastion.applibs.storage": [
        "MAX_CHUNK_BYTES", "FileInfo", "StorageUsage", "append_file", "delete_file", "get_usage", "list_files",
        "read_file", "write_file",
    ],
    "bastion.applibs.application": ["MAX_MESSAGE_BYTES", "Message", "receive_message", "send_message"],
    "bastion.applibs.sysevent": ["MAX_DEFER_MINUTES", "SystemEvent", "defer_event", "resume_event", "wait_for_event"],
    "bastion.applibs.powermanagement": [
        "POWER_PROFILES", "force_system_power_down", "force_system_reboot", "set_system_power_profile",
    ],
    "bastion.applibs.rtc": ["get_time", "set_time"],
    "bastion.applibs.certstore": [
        "CertificateInfo", "delete_certificate", "get_available_space", "install_client_certificate",
        "install_root_ca_certificate", "list_certificates",
    ],
    "bastion.applibs.watchdog": ["MAX_TIMEOUT_S", "MIN_TIMEOUT_S", "arm", "disarm", "kick"],
    "bastion.os.appservices.storage": ["CAPABILITY", "OPERATIONS", "StorageLimits", "StorageService", "check_name"],
    "bastion.os.appservices.application": ["CAPABILITY", "OPERATIONS", "AppMessage", "MessageLimits", "MessageService"],
    "bastion.os.appservices.channel": ["MAX_CHANNELS_PER_APP", "MAX_WAIT_S", "OPERATIONS", "ChannelService"],
    "bastion.os.appservices.sysevent": [
        "EVENT_KINDS", "MAX_DEFER_MINUTES", "OPERATIONS", "SysEventLimits", "SysEventService", "SystemEvent",
    ],
    "bastion.os.appservices.power": [
        "APP_POWER_EVENT", "CAPABILITY", "MAX_PROFILE_CHANGES", "OPERATIONS", "POWER_PROFILES", "PowerService",
    ],
    "bastion.os.appservices.rtc": ["CLOCK_SET_EVENT", "OPERATIONS", "ClockLimits", "DeviceClockService"],
    "bastion.os.appservices.certstore": [
        "CAPABILITY", "OPERATIONS", "CertStoreLimits", "CertStoreService", "StoredCertificate",
    ],
    "bastion.os.appservices.watchdog": [
        "OPERATIONS", "WATCHDOG_EVENT", "Deadline", "WatchdogLimits", "WatchdogService",
    ],
    "bastion.os.appservices.clock": ["OsClock", "current_time", "utcnow"],
    "bastion.os.appservices.device": [
        "CERTSTORE_DIRNAME", "CLOCK_FILE", "SYSEVENTS_FILE", "CapabilityServices", "capability_services",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_public_names(module: str) -> None:
    loaded = importlib.import_module(module)
    assert sorted(loaded.__all__) == sorted(EXPECTED[module])
    for name in loaded.__all__:
        assert hasattr(loaded, name), name


def test_the_power_and_time_event_kinds_are_known_to_device_and_service() -> None:
    from bastion.os.appservices.power import APP_POWER_EVENT
    from bastion.os.appservices.rtc import CLOCK_SET_EVENT
    from bastion.os.appservices.watchdog import WATCHDOG_EVENT
    from bastion.os.updates.events import EVENT_KINDS
    from bastion.service.devicestatus.report import EVENT_KINDS as SERVICE_KINDS

    for kind in (APP_POWER_EVENT, CLOCK_SET_EVENT, WATCHDOG_EVENT):
        assert kind in EVENT_KINDS
        assert kind in SERVICE_KINDS
