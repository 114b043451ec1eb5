"""The update agent's stage selection: a staged target in the stage only, else the fallback, above anti-rollback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_updates_agent import DEVICE_ID, NOW, Rig, make_rig
from test_updates_support import APP_A, app_custom, build_app, build_os, os_custom

from bastion.images.rollout import rollout_point
from bastion.os.updates.os_update import RunningOs

SEED = "seed-test-1"
POINT = rollout_point(DEVICE_ID, SEED)
IN, OUT = POINT + 1, POINT  # the device is in a stage of POINT + 1 basis points, not in one of POINT


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(tmp_path)
    made.agent.on_attested(NOW)
    yield made
    made.apps.stop_all()


def staged(custom: dict[str, Any], percent_bp: int, *, fallback: bool = False, seed: str = SEED) -> dict[str, Any]:
    marker: dict[str, Any] = {"seed": seed, "percent_bp": percent_bp}
    if fallback:
        marker["fallback"] = True
    custom["bastion"]["rollout"] = marker
    return custom


def publish(rig: Rig, version: str, percent_bp: int | None, *, fallback: bool = False, svn: int = 1) -> None:
    data = build_app(rig.root / "build", rig.app_key, APP_A, version)
    custom = app_custom(APP_A, version)
    custom["bastion"]["security_version"] = svn
    if percent_bp is not None:
        custom = staged(custom, percent_bp, fallback=fallback)
    rig.repo.add_target(f"apps/{APP_A}/{version}.img", data, custom)


def drop(rig: Rig, version: str) -> None:
    del rig.repo.targets.signed.targets[f"apps/{APP_A}/{version}.img"]


def installed(rig: Rig) -> list[tuple[str, str]]:
    return [(a.component_id, a.version) for a in rig.store.installed()]


def test_without_a_marker_nothing_changes(rig: Rig) -> None:
    publish(rig, "1.0.0", None)
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "installed"
    assert installed(rig) == [(APP_A, "1.0.0")]


def test_a_device_outside_the_stage_keeps_the_previous_release(rig: Rig) -> None:
    publish(rig, "1.0.0", None)
    rig.repo.publish()
    rig.agent.check(NOW)
    drop(rig, "1.0.0")
    publish(rig, "2.0.0", OUT)
    publish(rig, "1.0.0", OUT, fallback=True)
    rig.repo.publish()
    assert rig.agent.check(NOW + dt.timedelta(minutes=1)).result == "up-to-date"
    assert installed(rig) == [(APP_A, "1.0.0")]


def test_a_device_in_the_stage_takes_the_new_release(rig: Rig) -> None:
    publish(rig, "1.0.0", None)
    rig.repo.publish()
    rig.agent.check(NOW)
    drop(rig, "1.0.0")
    publish(rig, "2.0.0", IN)
    publish(rig, "1.0.0", IN, fallback=True)
    rig.repo.publish()
    summary = rig.agent.check(NOW + dt.timedelta(minutes=1))
    assert summary.installed == [{"component_id": APP_A, "version": "2.0.0"}]


def test_a_halted_stage_goes_back_to_the_older_fallback(rig: Rig) -> None:
    publish(rig, "2.0.0", IN)
    publish(rig, "1.0.0", IN, fallback=True)
    rig.repo.publish()
    assert rig.agent.check(NOW).installed == [{"component_id": APP_A, "version": "2.0.0"}]
    # The stage halts: the service republishes with percent 0, everyone is offered the fallback.
    publish(rig, "2.0.0", 0)
    publish(rig, "1.0.0", 0, fallback=True)
    rig.repo.publish()
    summary = rig.agent.check(NOW + dt.timedelta(minutes=1))
    assert summary.installed == [{"component_id": APP_A, "version": "1.0.0"}]
    assert installed(rig) == [(APP_A, "1.0.0")]
    assert rig.agent.check(NOW + dt.timedelta(minutes=2)).result == "up-to-date"  # and it stays there


def test_a_fallback_below_the_installed_security_version_is_not_taken(rig: Rig) -> None:
    publish(rig, "2.0.0", IN, svn=3)
    publish(rig, "1.0.0", IN, fallback=True, svn=1)
    rig.repo.publish()
    rig.agent.check(NOW)
    publish(rig, "2.0.0", 0, svn=3)
    publish(rig, "1.0.0", 0, fallback=True, svn=1)
    rig.repo.publish()
    assert rig.agent.check(NOW + dt.timedelta(minutes=1)).result == "up-to-date"
    assert installed(rig) == [(APP_A, "2.0.0")]


def test_a_malformed_marker_makes_the_target_not_ours(rig: Rig) -> None:
    data = build_app(rig.root / "build", rig.app_key, APP_A, "1.0.0")
    custom = app_custom(APP_A, "1.0.0")
    custom["bastion"]["rollout"] = {"seed": "", "percent_bp": 10_000}
    rig.repo.add_target(f"apps/{APP_A}/1.0.0.img", data, custom)
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "up-to-date"
    assert installed(rig) == []


def test_os_fallback_goes_back_only_where_anti_rollback_allows(rig: Rig) -> None:
    rig.agent.running = RunningOs("1.1.0", 1, "A")
    old = build_os(rig.os_key, "1.0.0", 1, b"old os " * 1000)
    new = build_os(rig.os_key, "1.1.0", 1, b"new os " * 1000)
    rig.repo.add_target("os/x/1.1.0.img", new, staged(os_custom("1.1.0", 1), 0))
    rig.repo.add_target("os/x/1.0.0.img", old, staged(os_custom("1.0.0", 1), 0, fallback=True))
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "reboot"
    assert rig.monitor.installed_bytes == [old]  # the halted stage's device goes back to 1.0.0


def test_os_fallback_below_the_running_security_version_is_not_taken(rig: Rig) -> None:
    rig.agent.running = RunningOs("1.1.0", 2, "A")
    old = build_os(rig.os_key, "1.0.0", 1, b"old os " * 1000)
    new = build_os(rig.os_key, "1.1.0", 2, b"new os " * 1000)
    rig.repo.add_target("os/x/1.1.0.img", new, staged(os_custom("1.1.0", 2), 0))
    rig.repo.add_target("os/x/1.0.0.img", old, staged(os_custom("1.0.0", 1), 0, fallback=True))
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "up-to-date"
    assert rig.monitor.installed_bytes == []


def test_os_in_stage_takes_the_new_os(rig: Rig) -> None:
    new = build_os(rig.os_key, "1.1.0", 1, b"new os " * 1000)
    old = build_os(rig.os_key, "1.0.0", 1, b"old os " * 1000)
    rig.repo.add_target("os/x/1.1.0.img", new, staged(os_custom("1.1.0", 1), IN))
    rig.repo.add_target("os/x/1.0.0.img", old, staged(os_custom("1.0.0", 1), IN, fallback=True))
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "reboot"
    assert rig.monitor.installed_bytes == [new]
