"""Power cuts at every durable write of an OS update, in-process and deterministic.

Each test runs the update 1.0.0 (slot A) -> 1.1.0 (slot B) with the real boot
chain and the real monitor handler, and cuts the power at one point: a
:class:`PowerCut` (a BaseException, so nothing on the way catches it, as with a
dead process) raised from the monitor's checkpoint hook right after a durable
write, or a half-written slot file left behind as a killed writer would. Then:

1. the next boot must succeed and boot a good OS (old or new), from a slot the
   boot state names, whose image verifies and is not below the counter;
2. the device, continuing as the update agent would (confirm a trial, or retry
   the install), must converge to 1.1.0 active in slot B with the counter at 2
   and 1.0.0 still in slot A.

The same points are exercised with real processes and SIGKILL in test_ab_process.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _ab_world import AbDevice, AbWorld, PowerCut, cut_at, make_ab_world

from bastion.boot.result import BootResult
from bastion.boot.slots import STEP_ARMED, STEP_CONFIRMED, STEP_COUNTER_RAISED, STEP_SLOT_WRITTEN
from bastion.hw.flash import BootEvent, BootState, Partition, Slot


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> AbWorld:
    return make_ab_world(tmp_path_factory.mktemp("powercut"))


@pytest.fixture
def device(world: AbWorld, request: pytest.FixtureRequest) -> AbDevice:
    return world.device(request.node.name.replace("[", "-").rstrip("]"))


def assert_boots_a_good_os(device: AbDevice, result: BootResult) -> None:
    """The invariant: the booted slot is the active one (or the armed trial) and is not rolled back."""
    state = device.state
    booted = Slot(result.boot_slot)
    assert booted is (state.trial_slot if result.trial else state.active_slot)
    assert state.active_slot is not None
    assert result.os_version == device.slot_version(booted)
    assert result.os_security_version >= device.os_counter


def converge(world: AbWorld, device: AbDevice, result: BootResult) -> None:
    """Carry on as the update agent would, until 1.1.0 is confirmed; then check the end state."""
    for _ in range(4):
        if result.os_version == "1.1.0" and not result.trial and device.state.active_slot is Slot.B:
            break
        if result.trial:
            device.ok("confirm_boot")
        else:
            device.ok("install_os", {"path": str(device.stage(world.v110))})
        result = device.boot()
        assert_boots_a_good_os(device, result)
    assert device.state.active_slot is Slot.B
    assert device.state.trial_slot is None
    assert (result.boot_slot, result.os_version, device.os_counter) == ("B", "1.1.0", 2)
    assert device.slot_version(Slot.A) == "1.0.0"


def test_cut_after_staging(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    device.stage(world.v110)
    result = device.boot()  # power back: nothing was armed
    assert (result.boot_slot, result.os_version, result.trial) == ("A", "1.0.0", False)
    assert_boots_a_good_os(device, result)
    converge(world, device, result)


def test_cut_during_the_slot_write(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    # A writer killed mid-copy leaves its temp file; the slot file itself is only ever renamed into place.
    data = world.v110.read_bytes()
    stale = device.dev / "flash" / ".os_b.bin.k1ll3d.tmp"
    stale.write_bytes(data[: len(data) // 2])
    result = device.boot()
    assert (result.boot_slot, result.trial) == ("A", False)
    assert device.chip.flash.is_empty(Slot.B.flash_partition)
    assert_boots_a_good_os(device, result)
    converge(world, device, result)
    assert not stale.exists()  # the next write of that slot removed it


def test_cut_during_a_slot_rewrite_keeps_the_previous_content(world: AbWorld, device: AbDevice) -> None:
    device.boot(checkpoint=cut_at(STEP_SLOT_WRITTEN))
    with pytest.raises(PowerCut):
        device.call("install_os", {"path": str(device.stage(world.v110))})
    # A second install dies mid-copy: slot B keeps the complete earlier write.
    (device.dev / "flash" / ".os_b.bin.again.tmp").write_bytes(b"partial")
    result = device.boot()
    assert device.slot_version(Slot.B) == "1.1.0"
    assert device.state == BootState(active_slot=Slot.A)
    converge(world, device, result)


@pytest.mark.parametrize(
    ("step", "expect_slot", "expect_trial"),
    [
        (STEP_SLOT_WRITTEN, "A", False),  # written but not armed: the old OS boots
        (STEP_ARMED, "B", True),  # armed, no reboot yet: the trial boots
    ],
)
def test_cut_inside_install_os(
    world: AbWorld, device: AbDevice, step: str, expect_slot: str, expect_trial: bool
) -> None:
    device.boot(checkpoint=cut_at(step))
    with pytest.raises(PowerCut):
        device.call("install_os", {"path": str(device.stage(world.v110))})
    result = device.boot()
    assert (result.boot_slot, result.trial) == (expect_slot, expect_trial)
    assert_boots_a_good_os(device, result)
    assert device.os_counter == 1
    converge(world, device, result)


def test_cut_during_the_trial_before_confirm_rolls_back(world: AbWorld, device: AbDevice) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    assert device.boot().trial  # ... and the power goes before confirm_boot
    result = device.boot()
    assert (result.boot_slot, result.os_version, result.trial) == ("A", "1.0.0", False)
    assert_boots_a_good_os(device, result)
    event = device.state.last_event
    assert isinstance(event, BootEvent)
    assert (event.kind, event.from_version, event.to_version) == ("rollback", "1.1.0", "1.0.0")
    assert device.os_counter == 1  # never raised for an unconfirmed OS
    device.ok("ack_boot_event")
    converge(world, device, result)


@pytest.mark.parametrize("step", [STEP_CONFIRMED, STEP_COUNTER_RAISED])
def test_cut_inside_confirm_boot(world: AbWorld, device: AbDevice, step: str) -> None:
    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    device.boot(checkpoint=cut_at(step))
    with pytest.raises(PowerCut):
        device.call("confirm_boot")
    assert device.state == BootState(Slot.B, None, 0, None)  # the state write is the commit point
    assert device.os_counter == (1 if step == STEP_CONFIRMED else 2)
    result = device.boot()
    # B is active and boots as confirmed; the boot stage catches the counter up.
    assert (result.boot_slot, result.trial, result.rollback_counters["os"]) == ("B", False, 2)
    assert device.os_counter == 2
    assert_boots_a_good_os(device, result)
    converge(world, device, result)


def test_cut_while_the_bootloader_loads_the_trial(world: AbWorld, device: AbDevice, tmp_path: Path) -> None:
    # The attempt is spent (durably) before the trial slot is even read, so a trial that
    # dies anywhere in its boot, however early, is not retried for ever. The bootloader
    # stage is its own process: a bootloader built to die as it loads a trial stands for
    # the power cut (the ROM sees a stage that ended without an answer).
    from _boot_world import patched_sources, vendor_bootloader, write_bootloader

    from bastion.boot.errors import BootStageError

    device.boot()
    device.ok("install_os", {"path": str(device.stage(world.v110))})
    good = device.chip.flash.read(Partition.BOOTLOADER)
    marker = "def _boot_slot(chip: Chip, rom: RomOutput, slot: Slot, *, now: dt.datetime, trial: bool) -> BootResult:\n"
    dying = patched_sources(
        tmp_path, {"boot/bootloader.py": (marker, marker + "    if trial:\n        __import__('os')._exit(137)\n")}
    )
    write_bootloader(device.dev, vendor_bootloader(world.vendor, dying))
    with pytest.raises(BootStageError, match="status 137 without an answer"):
        device.boot()
    assert device.state == BootState(Slot.A, Slot.B, 0, None)
    write_bootloader(device.dev, good)
    result = device.boot()
    assert (result.boot_slot, result.trial) == ("A", False)
    assert device.state.last_event is not None
    converge(world, device, result)


def test_short_trial_timeout_world_still_converges(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The trial limits come from the signed boot configuration; a test vendor may shorten them.
    world = make_ab_world(tmp_path_factory.mktemp("short"), trial_timeout_s=2)
    device = world.device("short")
    result = device.boot()
    assert result.trial_timeout_s == 2
    converge(world, device, result)
