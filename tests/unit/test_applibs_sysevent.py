"""System events and update deferral through the choke point."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest
from _applibs_rig import CID, AppRig

from bastion.applibs import sysevent
from bastion.applibs.errors import InvalidArgumentError, PermissionDeniedError
from bastion.os.appservices.channel import ChannelService
from bastion.os.appservices.clock import OsClock
from bastion.os.appservices.sysevent import SysEventService

NOW = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)


def _rig(tmp_path: Path, caps: dict[str, object], events: SysEventService) -> AppRig:
    return AppRig(tmp_path, caps, services=[events, ChannelService(), OsClock(lambda: NOW)])


def test_an_app_hears_update_events_and_defers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = SysEventService(tmp_path / "sysevents.json")
    caps = {"SystemEventNotifications": True, "SoftwareUpdateDeferral": True}
    with _rig(tmp_path, caps, events).install(monkeypatch) as app:
        got: list[sysevent.SystemEvent | None] = []
        waiter = threading.Thread(target=lambda: got.append(sysevent.wait_for_event(timeout=5)))
        waiter.start()
        time.sleep(0.1)
        events.publish("update_pending", update="os", max_deferral_minutes=1440, now=NOW)
        waiter.join(5)
        assert got[0] is not None
        assert (got[0].kind, got[0].update, got[0].max_deferral_minutes, got[0].at) == (
            "update_pending",
            "os",
            1440,
            NOW,
        )
        assert sysevent.defer_event(90) == NOW + dt.timedelta(minutes=90)
        assert events.requests() == {CID: NOW + dt.timedelta(minutes=90)}
        sysevent.resume_event()
        assert events.requests() == {}
        assert sysevent.wait_for_event(timeout=0.05) is None  # nothing new since
        assert app.records == []


def test_a_fresh_app_hears_the_update_in_progress_not_settled_ones(tmp_path: Path) -> None:
    events = SysEventService()
    events.publish("update_ready", update="app", max_deferral_minutes=0, now=NOW)
    events.settle()
    events.publish("update_pending", update="app", max_deferral_minutes=600, now=NOW)
    with _rig(tmp_path, {"SystemEventNotifications": True}, events) as app:
        reply = app.call("sysevent.wait", {"after": None, "timeout_ms": 0})
        assert [e["kind"] for e in reply["events"]] == ["update_pending"]
        again = app.call("sysevent.wait", {"after": reply["last_seq"], "timeout_ms": 0})
        assert again["events"] == []


def test_each_op_names_its_capability_when_denied(tmp_path: Path) -> None:
    events = SysEventService()
    with _rig(tmp_path, {}, events) as app:
        for op, capability in (
            ("sysevent.wait", "SystemEventNotifications"),
            ("sysevent.defer", "SoftwareUpdateDeferral"),
            ("sysevent.resume", "SoftwareUpdateDeferral"),
        ):
            with pytest.raises(PermissionDeniedError) as info:
                app.call(op, {"minutes": 5})
            assert info.value.capability == capability
        assert len(app.denied()) == 3
    # Notifications alone do not let an app defer.
    with (
        _rig(tmp_path, {"SystemEventNotifications": True}, events) as app,
        pytest.raises(PermissionDeniedError, match="SoftwareUpdateDeferral"),
    ):
        app.call("sysevent.defer", {"minutes": 5})
    assert events.requests() == {}


def test_a_request_is_capped_at_24_hours(tmp_path: Path) -> None:
    events = SysEventService()
    caps = {"SoftwareUpdateDeferral": True, "SystemEventNotifications": True}
    with _rig(tmp_path, caps, events) as app:
        for minutes in (0, 24 * 60 + 1, -5, "60"):
            with pytest.raises(InvalidArgumentError):
                app.call("sysevent.defer", {"minutes": minutes})
        assert app.call("sysevent.defer", {"minutes": 24 * 60})["until"] == int(
            (NOW + dt.timedelta(hours=24)).timestamp()
        )
        with pytest.raises(InvalidArgumentError):
            app.call("sysevent.wait", {"timeout_ms": 10_001})


def test_a_tampered_requests_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "sysevents.json"
    path.write_text('{"a": 1767225600, "b": "soon", "c": true, "d": -1}')
    assert set(SysEventService(path).requests()) == {"a"}
    path.write_text("[1, 2]")
    assert SysEventService(path).requests() == {}
    path.write_bytes(b"x" * 20000)
    assert SysEventService(path).requests() == {}
