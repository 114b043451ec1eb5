"""The application watchdog: ops through the choke point, and the manager's kill and restart on a fake clock."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _applibs_rig import CID, AppRig
from test_updates_support import APP_A, build_app

from bastion.applibs import watchdog
from bastion.applibs.errors import InvalidArgumentError, NotFoundError
from bastion.crypto.keys import generate_private_key
from bastion.os.apps.manager import AppLimits, AppManager
from bastion.os.apps.store import AppStore
from bastion.os.appservices.clock import OsClock
from bastion.os.appservices.watchdog import WatchdogService
from bastion.os.updates.events import EventQueue

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def test_arm_kick_disarm_through_applibs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, dog = FakeClock(), WatchdogService()
    with AppRig(tmp_path, {}, services=[dog, OsClock(clock)]).install(monkeypatch) as app:
        with pytest.raises(NotFoundError, match="not armed"):
            watchdog.kick()
        watchdog.arm(5.0)
        clock.now = NOW + dt.timedelta(seconds=4)
        watchdog.kick()
        assert dog.expired(NOW + dt.timedelta(seconds=8)) == []
        assert dog.expired(NOW + dt.timedelta(seconds=9)) == [CID]
        watchdog.disarm()
        assert dog.expired(NOW + dt.timedelta(days=1)) == []
        for timeout in (0.5, 3601.0):
            with pytest.raises(InvalidArgumentError):
                watchdog.arm(timeout)
        assert app.records == []  # no capability is needed


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[AppManager]:
    store = AppStore(tmp_path / "apps")
    img = tmp_path / "a.img"
    img.write_bytes(build_app(tmp_path / "build", generate_private_key(), APP_A, "1.0.0"))
    store.install(img, component_id=APP_A, version="1.0.0")
    made = AppManager(
        store,
        log_dir=tmp_path / "logs",
        data_dir=tmp_path / "data",
        events=EventQueue(tmp_path / "events.json"),
        limits=AppLimits(restart_initial_s=10, stop_grace_s=3),
    )
    made.watchdog = WatchdogService()
    yield made
    made.stop_all()


def test_a_missed_deadline_kills_restarts_and_records(manager: AppManager) -> None:
    assert manager.watchdog is not None
    manager.start_all(NOW)
    first = manager.running()[APP_A]
    manager.watchdog.arm(APP_A, 5.0, NOW + dt.timedelta(seconds=1))
    manager.poll(NOW + dt.timedelta(seconds=5))  # not yet due
    assert manager.running() == {APP_A: first}
    manager.poll(NOW + dt.timedelta(seconds=6))
    assert manager.running() == {}
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    events = [e for e in manager._events.all() if e.kind == "app_watchdog"]
    assert len(events) == 1
    assert events[0].component_id == APP_A
    assert "missed its 5 s watchdog deadline" in events[0].detail
    assert manager.watchdog.deadline(APP_A) is None  # the restarted app starts unarmed
    manager.poll(NOW + dt.timedelta(seconds=15))  # inside the normal backoff (10 s)
    assert manager.running() == {}
    manager.poll(NOW + dt.timedelta(seconds=16))
    assert APP_A in manager.running()
    assert manager.running()[APP_A] != first
    assert manager._apps[APP_A].crashes == 1


def test_an_arm_left_by_an_earlier_run_does_not_kill_the_new_one(manager: AppManager) -> None:
    assert manager.watchdog is not None
    manager.watchdog.arm(APP_A, 5.0, NOW - dt.timedelta(seconds=60))
    manager.start_all(NOW)
    manager.poll(NOW + dt.timedelta(seconds=1))
    assert APP_A in manager.running()
    assert [e.kind for e in manager._events.all()].count("app_watchdog") == 0
    assert manager.watchdog.deadline(APP_A) is None
