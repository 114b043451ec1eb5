"""PowerControls and SystemTime through the choke point."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from _applibs_rig import AppRig

from bastion.applibs import powermanagement, rtc
from bastion.applibs.errors import InvalidArgumentError, PermissionDeniedError, QuotaExceededError
from bastion.os.appservices.clock import OsClock
from bastion.os.appservices.power import PowerService
from bastion.os.appservices.rtc import ClockLimits, DeviceClockService

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def test_force_reboot_stops_the_os_for_a_reboot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    power = PowerService(stop)
    with AppRig(tmp_path, {"PowerControls": ["ForceReboot"]}, services=[power]).install(monkeypatch) as app:
        powermanagement.force_system_reboot()
        assert stop.is_set()
        assert (power.reboot_requested, power.power_down_requested) == (True, False)
        assert power.requested_by == app.ctx.component_id
        assert app.records == [("app_power", "ForceReboot: the device reboots")]
        with pytest.raises(PermissionDeniedError, match="does not list ForcePowerDown") as info:
            powermanagement.force_system_power_down()
        assert info.value.capability == "PowerControls"
        assert app.denied() == [
            "PowerControls: power.shutdown: the app manifest's PowerControls does not list ForcePowerDown"
        ]


def test_power_down_wins_and_the_profile_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    power = PowerService(stop)
    caps = {"PowerControls": ["ForcePowerDown", "SetPowerProfile"]}
    with AppRig(tmp_path, caps, services=[power]).install(monkeypatch) as app:
        powermanagement.set_system_power_profile("PowerSaver")
        assert power.profile == "PowerSaver"
        with pytest.raises(InvalidArgumentError):
            powermanagement.set_system_power_profile("Turbo")
        assert not stop.is_set()
        power.force_reboot("someone-else")
        powermanagement.force_system_power_down()
        assert (power.reboot_requested, power.power_down_requested) == (False, True)
        assert [d for k, d in app.records if k == "app_power"] == [
            "SetPowerProfile: PowerSaver",
            "ForcePowerDown: the device powers down",
        ]
        with pytest.raises(PermissionDeniedError, match="ForceReboot"):
            powermanagement.force_system_reboot()


def test_without_power_controls_every_op_is_denied(tmp_path: Path) -> None:
    stop = threading.Event()
    with AppRig(tmp_path, {}, services=[PowerService(stop)]) as app:
        for op in ("power.reboot", "power.shutdown", "power.profile"):
            with pytest.raises(PermissionDeniedError) as info:
                app.call(op, {"profile": "Balanced"})
            assert info.value.capability == "PowerControls"
        assert len(app.denied()) == 3
    assert not stop.is_set()


def _clock_rig(tmp_path: Path, caps: dict[str, object], service: DeviceClockService) -> AppRig:
    return AppRig(tmp_path, caps, services=[service, OsClock(lambda: NOW)])


def test_set_time_keeps_a_bounded_persisted_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clock.json"
    service = DeviceClockService(path)
    with _clock_rig(tmp_path, {"SystemTime": True}, service).install(monkeypatch) as app:
        later = NOW + dt.timedelta(hours=2)
        assert rtc.set_time(int(later.timestamp())) == 7200
        assert rtc.get_time() == later.timestamp()
        assert app.records == [("clock_set", "device clock offset +7200 s (was +0 s)")]
        with pytest.raises(InvalidArgumentError, match="at most"):
            rtc.set_time(int((NOW + dt.timedelta(days=400)).timestamp()))
        with pytest.raises(InvalidArgumentError, match="before 2024-01-01"):
            rtc.set_time(0)
    assert DeviceClockService(path).offset_s == 7200  # survives a reboot
    path.write_text('{"offset_s": 99999999999}')
    assert DeviceClockService(path).offset_s == 0  # out of bounds: ignored


def test_the_clock_is_never_set_before_the_device_certificate(tmp_path: Path) -> None:
    not_before = NOW - dt.timedelta(hours=1)
    service = DeviceClockService(not_before=lambda: not_before, limits=ClockLimits())
    with _clock_rig(tmp_path, {"SystemTime": True}, service) as app:
        with pytest.raises(InvalidArgumentError, match="notBefore"):
            app.call("rtc.set_time", {"epoch": int((not_before - dt.timedelta(seconds=1)).timestamp())})
        assert service.offset_s == 0
        app.call("rtc.set_time", {"epoch": int(not_before.timestamp())})
        assert service.offset_s == -3600  # backwards, but not past notBefore


def test_reading_time_needs_nothing_setting_it_needs_system_time(tmp_path: Path) -> None:
    with _clock_rig(tmp_path, {}, DeviceClockService()) as app:
        assert app.call("rtc.get_time")["epoch"] == NOW.timestamp()
        with pytest.raises(PermissionDeniedError) as info:
            app.call("rtc.set_time", {"epoch": int(NOW.timestamp())})
        assert info.value.capability == "SystemTime"
        assert len(app.denied()) == 1


def test_clock_sets_and_profile_changes_are_bounded_so_their_events_are(tmp_path: Path) -> None:
    stop = threading.Event()
    power = PowerService(stop, max_profile_changes=2)
    clock = DeviceClockService(limits=ClockLimits(max_sets_per_boot=2))
    caps = {"SystemTime": True, "PowerControls": ["SetPowerProfile"]}
    with AppRig(tmp_path, caps, services=[power, clock, OsClock(lambda: NOW)]) as app:
        for _ in range(2):
            app.call("rtc.set_time", {"epoch": int(NOW.timestamp())})
        with pytest.raises(QuotaExceededError, match="2 times since boot"):
            app.call("rtc.set_time", {"epoch": int(NOW.timestamp())})
        for profile in ("PowerSaver", "PowerSaver", "HighPerformance"):  # the repeat is no change
            app.call("power.profile", {"profile": profile})
        with pytest.raises(QuotaExceededError, match="power profile 2 times"):
            app.call("power.profile", {"profile": "Balanced"})
        kinds = [kind for kind, _ in app.records]
        assert (kinds.count("clock_set"), kinds.count("app_power")) == (2, 2)
