"""A power cut during a trial boot never blocklists a good OS; a failing one still is (issue 8 §6, ADR 0018).

The first half drives the real boot chain and monitor (:mod:`_ab_world`) and cuts
the power at each point of a trial boot, then hands the boot event the flash
holds to the update agent (as the next boot's ``boot`` would): a good image is
never blocklisted, and a trial that runs to a failed verdict is. The second
half pins the agent's bounded retry policy and the service clear that the
group's signed targets carry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from _ab_world import AbDevice, AbWorld, PowerCut, cut_at, make_ab_world
from test_updates_agent import NOW, Rig, make_rig
from test_updates_support import FakeMonitor, build_os, os_custom

from bastion.boot.slots import STEP_ARMED, STEP_CONFIRMED, STEP_COUNTER_RAISED
from bastion.hw.flash import OUTCOME_FAILED, OUTCOME_INTERRUPTED, BootEvent, Slot
from bastion.os.updates.agent_state import (
    FAILED_RETRY_BACKOFF_S,
    MAX_FAILED_RETRIES,
    MAX_INTERRUPTED_TRIALS,
    AgentState,
    load_agent_state,
)
from bastion.os.updates.pointer import MAX_SIGNED_CLEARS, signed_clears

SHA = "5a" * 32
DEVICE = "ab" * 32


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> AbWorld:
    return make_ab_world(tmp_path_factory.mktemp("trialfaults"))


@pytest.fixture
def device(world: AbWorld, request: pytest.FixtureRequest) -> AbDevice:
    return world.device(request.node.name.replace("[", "-").rstrip("]"))


def _agent_sees(tmp_path: Path, event: BootEvent | None) -> AgentState:
    """The next boot's agent, with the image pending, hears ``event``; return its saved state."""
    monitor = FakeMonitor(last_event=event)
    rig = make_rig(tmp_path / "agent", monitor=monitor)
    rig.agent.state.pending_os = {"version": "1.1.0", "sha256": SHA, "from_version": "1.0.0"}
    rig.agent.boot(NOW)
    rig.apps.stop_all()
    return load_agent_state(tmp_path / "agent" / "s")


# --- the boot chain: where the power goes ---------------------------------------------


def test_cut_before_the_trial_boot_is_no_rollback(world: AbWorld, device: AbDevice, tmp_path: Path) -> None:
    device.boot(checkpoint=cut_at(STEP_ARMED))
    with pytest.raises(PowerCut):
        device.call("install_os", {"path": str(device.stage(world.v110))})
    assert device.boot().trial  # the trial boots: nothing was spent on the cut
    assert device.state.last_event is None


def test_cut_during_the_trial_is_an_interrupted_rollback(world: AbWorld, device: AbDevice, tmp_path: Path) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    assert device.boot().trial  # ... and the power goes before any verdict
    result = device.boot()
    assert (result.boot_slot, result.trial) == ("A", False)
    event = device.state.last_event
    assert event is not None
    assert event.outcome == OUTCOME_INTERRUPTED
    state = _agent_sees(tmp_path, event)
    assert not state.is_blocked(SHA)  # a good image is not lost to a power cut
    assert state.os_trials[SHA]["interrupted"] == 1


@pytest.mark.parametrize("step", [STEP_CONFIRMED, STEP_COUNTER_RAISED])
def test_cut_inside_the_confirm_is_no_rollback(world: AbWorld, device: AbDevice, step: str) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    device.boot(checkpoint=cut_at(step))
    with pytest.raises(PowerCut):
        device.call("confirm_boot")
    result = device.boot()
    assert (result.boot_slot, result.trial) == ("B", False)
    assert device.state.last_event is None


def test_cut_after_a_failed_verdict_stays_failed(world: AbWorld, device: AbDevice, tmp_path: Path) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    device.boot(checkpoint=cut_at("trial-failed"))
    with pytest.raises(PowerCut):
        device.call("fail_trial", {"at": int(NOW.timestamp())})
    result = device.boot()  # the verdict was durable before the cut
    assert (result.boot_slot, result.trial) == ("A", False)
    event = device.state.last_event
    assert event is not None
    assert event.outcome == OUTCOME_FAILED
    assert _agent_sees(tmp_path, event).is_blocked(SHA)


def test_a_trial_that_fails_its_health_check_is_blocklisted(world: AbWorld, device: AbDevice, tmp_path: Path) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    assert device.boot().trial
    assert device.ok("fail_trial", {"at": int(NOW.timestamp())}) == {"rolled_back": True}
    assert device.state.trial_slot is None
    result = device.boot()
    assert (result.boot_slot, result.trial) == ("A", False)
    event = device.state.last_event
    assert event is not None
    assert (event.outcome, event.from_version) == (OUTCOME_FAILED, "1.1.0")
    state = _agent_sees(tmp_path, event)
    assert state.is_blocked(SHA)


def test_fail_trial_is_refused_outside_a_trial(device: AbDevice) -> None:
    device.boot()
    assert device.call("fail_trial", {"at": 1})["error"] == "bad_state"
    assert device.call("fail_trial", {})["error"] == "bad_args"


def test_a_trial_that_does_not_verify_is_a_failed_rollback(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    path = device.chip.flash.path(Slot.B.flash_partition)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    result = device.boot()
    assert (result.boot_slot, result.trial) == ("A", False)
    event = device.state.last_event
    assert event is not None
    assert event.outcome == OUTCOME_FAILED


def test_an_old_rollback_event_reads_as_failed() -> None:
    event = BootEvent.from_json({"kind": "rollback", "from_version": "1.1.0", "to_version": "1.0.0", "at": 5})
    assert event.outcome == OUTCOME_FAILED
    assert BootEvent.from_json(event.to_json()) == event


# --- the agent's events and bounded retry ----------------------------------------------


def test_events_say_interrupted_or_failed(tmp_path: Path) -> None:
    for outcome, kind in ((OUTCOME_INTERRUPTED, "os_trial_interrupted"), (OUTCOME_FAILED, "os_rolled_back")):
        monitor = FakeMonitor(last_event=BootEvent("rollback", "1.1.0", "1.0.0", 7, outcome))
        rig = make_rig(tmp_path / outcome, monitor=monitor)
        rig.agent.state.pending_os = {"version": "1.1.0", "sha256": SHA, "from_version": "1.0.0"}
        rig.agent.boot(NOW)
        rig.apps.stop_all()
        (event,) = rig.events.all()
        assert (event.kind, event.version) == (kind, "1.1.0")
        assert event.detail.startswith(outcome + ":")


def test_interruptions_are_bounded() -> None:
    state = AgentState()
    at = int(NOW.timestamp())
    for _ in range(MAX_INTERRUPTED_TRIALS - 1):
        assert state.note_interrupted(SHA, now=at) is False
        assert not state.is_blocked(SHA)
    assert state.note_interrupted(SHA, now=at) is True  # the bound: it counts as a failure
    assert state.is_blocked(SHA)


def test_a_failed_image_is_retried_after_a_bounded_backoff_then_stays_blocked() -> None:
    state = AgentState()
    at = int(NOW.timestamp())
    for attempt in range(MAX_FAILED_RETRIES):
        retry_at = state.note_failed(SHA, now=at)
        assert retry_at == at + FAILED_RETRY_BACKOFF_S * 2**attempt
        assert state.release_due(now=retry_at - 1) == []
        assert state.is_blocked(SHA)
        assert state.release_due(now=retry_at) == [SHA]
        assert not state.is_blocked(SHA)
        at = retry_at
    assert state.note_failed(SHA, now=at) == 0  # the retry bound holds
    assert state.release_due(now=at + 10**9) == []
    assert state.is_blocked(SHA)


def test_a_confirmed_image_forgets_its_record(tmp_path: Path) -> None:
    monitor = FakeMonitor(trial=True)
    rig = make_rig(tmp_path, monitor=monitor)
    rig.agent.state.note_interrupted(SHA, now=1)
    rig.agent.state.pending_os = {"version": "1.0.0", "sha256": SHA, "from_version": "0.9.0"}
    rig.agent.on_attested(NOW)
    rig.apps.stop_all()
    assert SHA not in load_agent_state(tmp_path / "s").os_trials


def test_a_refused_trial_attestation_fails_the_trial(tmp_path: Path) -> None:
    monitor = FakeMonitor(trial=True)
    rig = make_rig(tmp_path, monitor=monitor)
    assert rig.agent.on_trial_failed(NOW, "attestation refused: unknown_os") is True
    assert monitor.failed_at == [int(NOW.timestamp())]
    assert rig.reboots == [1]
    assert rig.agent.on_trial_failed(NOW, "again") is False  # no longer a trial
    rig.apps.stop_all()


# --- the service clear, signed into the group's targets ----------------------------------


def _blocked_rig(tmp_path: Path) -> tuple[Rig, bytes, str]:
    rig = make_rig(tmp_path)
    image = build_os(rig.os_key, "1.1.0", 2, b"good os, unlucky trial")
    sha = hashlib.sha256(image).hexdigest()
    for _ in range(MAX_FAILED_RETRIES + 1):
        rig.agent.state.note_failed(sha, now=int(NOW.timestamp()))
    rig.agent.on_attested(NOW)
    rig.repo.add_target("os/x/1.1.0.img", image, os_custom("1.1.0", 2))
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "up-to-date"  # blocklisted for good
    return rig, image, sha


def _sign_clears(rig: Rig, clears: list[dict[str, object]]) -> None:
    rig.repo.targets.signed.unrecognized_fields["custom"] = {
        "bastion": {"maintenance_window": None, "update_policy": "UpdateAll", "blocklist_clears": clears}
    }
    rig.repo.publish()


def test_a_group_clear_reaches_the_device(tmp_path: Path) -> None:
    rig, _, sha = _blocked_rig(tmp_path)
    _sign_clears(rig, [{"id": "c1", "sha256": sha, "devices": None}])
    summary = rig.agent.check(NOW + dt.timedelta(minutes=1))
    assert summary.result == "reboot"
    assert len(rig.agent._monitor.installed) == 1  # type: ignore[attr-defined]
    assert "os_blocklist_cleared" in rig.kinds()
    rig.apps.stop_all()


def test_a_device_clear_applies_to_that_device_only_and_once(tmp_path: Path) -> None:
    rig, _, sha = _blocked_rig(tmp_path)
    _sign_clears(rig, [{"id": "c2", "sha256": sha, "devices": ["cd" * 32]}])
    assert rig.agent.check(NOW + dt.timedelta(minutes=1)).result == "up-to-date"  # another device's clear
    _sign_clears(rig, [{"id": "c3", "sha256": sha, "devices": [DEVICE]}])
    state = rig.agent.state
    assert state.apply_clear("c3", sha) is True
    state.note_failed(sha, now=int(NOW.timestamp()))
    assert state.apply_clear("c3", sha) is False  # a clear is applied once: a new failure counts again
    assert state.is_blocked(sha)
    rig.apps.stop_all()


def test_malformed_clears_are_ignored() -> None:
    good = {"id": "ok", "sha256": SHA, "devices": None}
    custom = {
        "bastion": {
            "blocklist_clears": [
                "x",
                {"id": "UPPER", "sha256": SHA},
                {"id": "bad-sha", "sha256": "zz"},
                {"id": "dev", "sha256": SHA, "devices": "all"},
                good,
            ]
        }
    }
    assert [c.clear_id for c in signed_clears(custom, DEVICE)] == ["ok"]
    assert (
        signed_clears({"bastion": {"blocklist_clears": [good] * (MAX_SIGNED_CLEARS + 5)}}, DEVICE)
        == [signed_clears({"bastion": {"blocklist_clears": [good]}}, DEVICE)[0]] * MAX_SIGNED_CLEARS
    )


# --- bounded disk ------------------------------------------------------------------------


def _runtimes(device: AbDevice) -> set[str]:
    return {p.name for p in (device.dev / "run").iterdir() if p.name.startswith(("os-", ".os-"))}


def test_runtimes_in_neither_slot_and_interrupted_unpacks_are_removed(world: AbWorld, device: AbDevice) -> None:
    first = device.boot()
    run = device.dev / "run"
    (run / "os-00000000000000ff").mkdir()  # an OS booted long ago
    (run / "os-00000000000000ff" / "x.py").write_text("old")
    (run / ".os-00000000000000ee.1a2b.tmp").mkdir()  # an unpack the power cut
    (run / "bl-keepme").mkdir(exist_ok=True)  # not the OS's: left alone
    device.boot()
    assert _runtimes(device) == {first.os_runtime_dir.name}
    assert (run / "bl-keepme").is_dir()
    # 1.0.0 -> 1.1.0: both slots' runtimes stay.
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    trial = device.boot()
    device.ok("confirm_boot")
    assert _runtimes(device) == {first.os_runtime_dir.name, trial.os_runtime_dir.name}
    # 1.1.0 -> 1.2.0 overwrites slot A: 1.0.0 is in neither slot and its runtime goes.
    v120 = world.image("os-1.2.0.img", "1.2.0", 3)
    device.boot()
    device.ok("install_os", {"path": str(device.stage(v120))})
    newest = device.boot()
    assert newest.os_version == "1.2.0"
    assert _runtimes(device) == {trial.os_runtime_dir.name, newest.os_runtime_dir.name}


def test_pruning_is_bounded(tmp_path: Path) -> None:
    from bastion.boot.runtimes import prune_runtimes

    for i in range(10):
        (tmp_path / f"os-{i:016x}").mkdir()
    removed = prune_runtimes(tmp_path, keep=set(), max_entries=4)
    assert len(removed) == 4
    assert len(list(tmp_path.iterdir())) == 6


def test_stray_staging_files_are_removed_at_os_start(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    staging = tmp_path / "s" / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "os-abc.img.part").write_bytes(b"cut")
    (staging / ".tmp-1").write_bytes(b"cut")
    rig.agent.boot(NOW)
    rig.apps.stop_all()
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (403, "unknown_os", True),
        (403, "os_revoked", True),
        (403, "measurement_mismatch", True),
        (403, "nonce_expired", False),  # no verdict on the image
        (403, "device_revoked", False),
        (429, "rate_limited", False),
        (503, "unavailable", False),
    ],
)
def test_only_a_refusal_about_the_image_fails_the_trial(status: int, code: str, verdict: bool) -> None:
    from types import SimpleNamespace

    from bastion.os.errors import AttestationRefusedError
    from bastion.os.updates.system import UpdateSystem

    heard: list[str] = []
    agent = SimpleNamespace(on_trial_failed=lambda now, reason: heard.append(reason) or True)
    fake = SimpleNamespace(agent=agent, failures=None)  # failure reporting is tested in test_reporting_*
    assert UpdateSystem.on_refused(fake, AttestationRefusedError(status, code, "no"), NOW) is False  # type: ignore[arg-type]
    assert bool(heard) is verdict
