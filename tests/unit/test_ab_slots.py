"""A/B OS updates in-process: boot state, boot config, SemVer, bootloader trial logic, monitor ops."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ab_world import NOW, AbDevice, AbWorld, make_ab_world

from bastion.boot.config import BootConfig
from bastion.boot.errors import BootConfigError, SlotStateError, VendorError
from bastion.boot.factory import flash_os
from bastion.boot.vendor import init_vendor
from bastion.cli.device_run_cmds import identity_from_boot
from bastion.crypto.keys import generate_private_key
from bastion.hw.errors import StateCorruptError
from bastion.hw.flash import BootEvent, BootState, Slot
from bastion.images.os_build import build_os_image
from bastion.images.semver import compare_versions, is_newer
from bastion.monitor.client import MonitorClient
from bastion.monitor.errors import MonitorRefusedError
from bastion.monitor.identity import decode_handoff, encode_handoff
from bastion.monitor.server import MonitorServer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> AbWorld:
    return make_ab_world(tmp_path_factory.mktemp("ab"))


@pytest.fixture
def device(world: AbWorld, request: pytest.FixtureRequest) -> AbDevice:
    return world.device(request.node.name)


# --- boot state file ---------------------------------------------------------------------------


def test_boot_state_round_trips_and_reads_the_old_format() -> None:
    state = BootState(Slot.A, Slot.B, 1, BootEvent("rollback", "1.1.0", "1.0.0", 1_700_000_000))
    assert BootState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert BootState.from_json({"active_slot": "B"}) == BootState(active_slot=Slot.B)


@pytest.mark.parametrize(
    "value",
    [
        {"active_slot": "A", "trial_slot": "A", "attempts_left": 1},  # a trial of the active slot
        {"active_slot": None, "trial_slot": "B", "attempts_left": 1},  # a trial with nothing to return to
        {"active_slot": "A", "attempts_left": 17},
        {"active_slot": "A", "attempts_left": -1},
        {"active_slot": "A", "attempts_left": True},
        {"active_slot": "C"},
        {"active_slot": "A", "extra": 1},
        {"active_slot": "A", "last_event": {"kind": "rollback"}},
        {"active_slot": "A", "last_event": {"kind": "x" * 65, "from_version": "", "to_version": "", "at": 0}},
        {"active_slot": "A", "last_event": {"kind": "rollback", "from_version": "", "to_version": "", "at": -5}},
    ],
)
def test_boot_state_is_parsed_strictly(value: dict[str, object]) -> None:
    with pytest.raises(StateCorruptError):
        BootState.from_json(value)


def test_update_boot_state_is_all_or_nothing(device: AbDevice) -> None:
    before = (device.dev / "flash" / "bootstate.json").read_bytes()

    def refuse(state: BootState) -> BootState:
        raise SlotStateError("no")

    with pytest.raises(SlotStateError):
        device.chip.flash.update_boot_state(refuse)
    assert (device.dev / "flash" / "bootstate.json").read_bytes() == before


# --- boot configuration and vendor ----------------------------------------------------------


def test_boot_config_carries_trial_limits_and_reads_old_configs() -> None:
    key = generate_private_key().public_key()
    config = BootConfig((key,), trial_boot_limit=2, trial_timeout_s=5)
    assert BootConfig.from_json(config.to_json()) == config
    old = json.loads(config.to_json())
    del old["trial_timeout_s"]
    assert BootConfig.from_json(json.dumps(old).encode()).trial_timeout_s == 60
    for bad in (0, 24 * 3600 + 1, True, "5"):
        with pytest.raises(BootConfigError, match="trial_timeout_s"):
            BootConfig.from_json(json.dumps({**old, "trial_timeout_s": bad}).encode())
    assert BootConfig((key,)).trial_boot_limit == 1  # the documented default


def test_vendor_init_refuses_an_out_of_range_trial_timeout(tmp_path: Path) -> None:
    with pytest.raises(VendorError, match="trial_timeout_s"):
        init_vendor(tmp_path / "v", now=NOW, trial_timeout_s=0)


# --- SemVer 2.0.0 section 11 -----------------------------------------------------------------

SEMVER_ORDER = [
    "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
    "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.9.0", "1.10.0", "2.0.0",
]  # fmt: skip


def test_semver_precedence_follows_the_spec() -> None:
    for index, lower in enumerate(SEMVER_ORDER):
        for higher in SEMVER_ORDER[index + 1 :]:
            assert compare_versions(lower, higher) == -1, (lower, higher)
            assert compare_versions(higher, lower) == 1
    assert compare_versions("1.0.0+build.1", "1.0.0+build.2") == 0
    assert not is_newer("1.0.0", "1.0.0")
    with pytest.raises(ValueError, match="not a semantic version"):
        compare_versions("1.0", "1.0.0")


# --- the happy path and the monitor ops ---------------------------------------------------------


def test_install_confirm_makes_the_new_slot_active_and_raises_the_counter(world: AbWorld, device: AbDevice) -> None:
    first = device.boot()
    assert (first.boot_slot, first.trial, device.os_counter) == ("A", False, 1)
    staged = device.stage(world.v110)
    assert device.ok("install_os", {"path": str(staged)}) == {"slot": "B", "version": "1.1.0", "security_version": 2}
    assert device.state == BootState(Slot.A, Slot.B, 1, None)
    assert device.slot_version(Slot.B) == "1.1.0"

    trial = device.boot()
    assert (trial.boot_slot, trial.os_version, trial.trial) == ("B", "1.1.0", True)
    assert device.state.attempts_left == 0  # spent before the trial ran
    counters = device.ok("read_counters")
    assert (counters["trial"], counters["last_event"], counters["counters"]["os"]) == (True, None, 1)
    assert device.ok("confirm_boot") == {"active_slot": "B", "os_counter": 2}
    assert device.state == BootState(Slot.B, None, 0, None)
    assert device.os_counter == 2
    after = device.ok("read_counters")
    assert (after["trial"], after["counters"]["os"]) == (False, 2)
    assert device.call("confirm_boot")["error"] == "bad_state"  # no longer a trial

    again = device.boot()
    assert (again.boot_slot, again.os_version, again.trial) == ("B", "1.1.0", False)
    assert device.slot_version(Slot.A) == "1.0.0"  # the old slot still holds the old OS


def test_unconfirmed_trial_rolls_back_and_keeps_the_counter(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    assert device.boot().trial
    back = device.boot(now=NOW.replace(hour=13))  # the trial never confirmed (nor failed: no verdict)
    assert (back.boot_slot, back.os_version, back.trial) == ("A", "1.0.0", False)
    event = BootEvent("rollback", "1.1.0", "1.0.0", int(NOW.replace(hour=13).timestamp()), "interrupted")
    assert device.state == BootState(Slot.A, None, 0, event)
    assert device.os_counter == 1
    assert device.ok("read_counters")["last_event"] == event.to_json()
    assert device.ok("ack_boot_event") == {}
    assert device.state.last_event is None
    assert device.ok("read_counters")["last_event"] is None
    # The same update can be tried again after a rollback.
    assert device.ok("install_os", {"path": str(device.stage(world.v110))})["slot"] == "B"


def test_a_trial_image_that_fails_verification_rolls_back_at_once(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    slot_b = device.chip.flash.path(Slot.B.flash_partition)
    data = bytearray(slot_b.read_bytes())
    data[-10] ^= 1
    slot_b.write_bytes(bytes(data))
    result = device.boot()
    assert (result.boot_slot, result.trial) == ("A", False)
    assert device.state.trial_slot is None
    assert device.state.last_event is not None
    assert device.state.last_event.from_version == "1.1.0"


def test_trial_boot_limit_gives_that_many_trial_boots(tmp_path: Path) -> None:
    world = make_ab_world(tmp_path, trial_boot_limit=2)
    device = world.device("two")
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    assert [device.boot().trial, device.boot().trial, device.boot().trial] == [True, True, False]
    assert device.state.last_event is not None


@pytest.mark.parametrize(
    ("image", "detail"),
    [("v100", "not newer than the running OS 1.0.0"), ("older", "not newer"), ("foreign", "refused")],
)
def test_install_refuses_images_that_are_not_newer_or_not_ours(
    world: AbWorld, device: AbDevice, image: str, detail: str
) -> None:
    device.boot()
    if image == "v100":
        path = world.v100
    elif image == "older":
        path = world.image("os-0.9.0.img", "0.9.0", 1)
    else:
        path = build_os_image(world.root / "rogue.img", "9.0.0", 9, generate_private_key()).path
    answer = device.call("install_os", {"path": str(device.stage(path))})
    assert answer["error"] == "image_refused"
    assert detail in answer["detail"]
    assert device.state == BootState(active_slot=Slot.A)
    assert device.chip.flash.is_empty(Slot.B.flash_partition)


def test_install_refuses_an_image_below_the_counter(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    device.chip.fuses.burn_counter("os", 3)
    answer = device.call("install_os", {"path": str(device.stage(world.v110))})
    assert answer["error"] == "image_refused"
    assert "below the anti-rollback counter 3" in answer["detail"]


def test_install_refuses_while_a_trial_is_armed_or_running(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    staged = str(device.stage(world.v110))
    device.ok("install_os", {"path": staged})
    assert device.call("install_os", {"path": staged})["error"] == "bad_state"
    device.boot()  # the trial
    newer = str(device.stage(world.image("os-1.2.0.img", "1.2.0", 2), "n.img"))
    answer = device.call("install_os", {"path": newer})
    assert (answer["error"], "trial" in answer["detail"]) == ("bad_state", True)
    device.ok("confirm_boot")
    assert device.ok("install_os", {"path": newer})["slot"] == "A"  # confirmed: the next update may go


def test_install_path_must_be_a_file_inside_staging(world: AbWorld, device: AbDevice, tmp_path: Path) -> None:
    device.boot()
    staged = device.stage(world.v110)
    outside = tmp_path / "outside.img"
    outside.write_bytes(world.v110.read_bytes())
    link = staged.parent / "link.img"
    link.symlink_to(outside)
    for path in (
        str(outside),
        str(link),  # a link out of staging resolves outside it
        str(staged.parent / ".." / ".." / "flash" / "os_a.bin"),
        str(staged.parent),
        str(staged.parent / "missing.img"),
    ):
        assert device.call("install_os", {"path": path})["error"] == "bad_path", path
    os.mkfifo(staged.parent / "fifo")
    assert device.call("install_os", {"path": str(staged.parent / "fifo")})["error"] == "bad_path"
    for args in ({}, {"path": 1}, {"path": ""}, {"path": str(staged), "x": 1}, {"path": "a" * 5000}):
        assert device.call("install_os", args)["error"] == "bad_args"
    assert device.state.trial_slot is None


def test_ops_refuse_extra_args_and_a_boot_without_a_device_dir(device: AbDevice) -> None:
    result = device.boot()
    for op in ("confirm_boot", "ack_boot_event", "read_counters"):
        assert device.call(op, {"x": 1})["error"] == "bad_args"
    device.server = MonitorServer(identity_from_boot(result))  # no dev_dir in the hand-off
    assert device.call("ack_boot_event")["error"] == "bad_state"
    assert device.ok("read_counters")["last_event"] is None


def test_handoff_carries_the_device_dir_and_the_trial_flag(device: AbDevice) -> None:
    identity = identity_from_boot(device.boot(), device.dev)
    decoded = decode_handoff(encode_handoff(identity))
    assert (decoded.dev_dir, decoded.trial) == (str(device.dev), False)


def test_bench_flash_of_the_trial_slot_disarms_the_trial(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    flash_os(device.dev, world.image("os-1.3.0.img", "1.3.0", 2), slot=Slot.B)
    assert device.state == BootState(active_slot=Slot.A)


# --- the typed client over a real socket --------------------------------------------------------


@pytest.fixture
def client(device: AbDevice) -> Iterator[MonitorClient]:
    device.boot()
    assert device.server is not None
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=device.server.serve, args=(theirs,), daemon=True)
    thread.start()
    monitor = MonitorClient(ours)
    try:
        yield monitor
    finally:
        monitor.close()
        thread.join(timeout=5)
        theirs.close()


def test_client_methods_are_typed_and_raise_the_monitor_code(
    world: AbWorld, device: AbDevice, client: MonitorClient
) -> None:
    boot = client.read_counters()
    assert (boot.trial, boot.last_event, boot.boot_slot) == (False, None, "A")
    with pytest.raises(MonitorRefusedError) as refused:
        client.confirm_boot()
    assert refused.value.code == "bad_state"
    installed = client.install_os(str(device.stage(world.v110)))
    assert (installed.slot, installed.version, installed.security_version) == ("B", "1.1.0", 2)
    with pytest.raises(MonitorRefusedError) as again:
        client.install_os(str(device.dev / "nowhere"))
    assert again.value.code == "bad_path"
    client.ack_boot_event()
