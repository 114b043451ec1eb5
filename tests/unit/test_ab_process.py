"""A/B OS updates with real processes: ``bastion device run``, its monitor and OS, and SIGKILL.

Design: the device runs a *scripted test OS* (``_ab_driver.py``, built into a
signed OS image as ``bastion/os/__main__.py``; everything else in the image is
the real tree, including the monitor client). ``device run`` boots it from a
verified slot like any OS, so the update ops go OS -> socketpair -> monitor
process exactly as the update agent's will. The driver follows a per-boot plan
(install, confirm, ack, mark, hang, exit N) and logs what the monitor reported at
each boot. A "power cut" is SIGKILL to ``device run``'s whole process group
(supervisor, monitor and OS die at once), sent when the driver has marked the
point; the test then runs ``device run`` again and checks the device boots a good
OS and converges. The cut points inside a single monitor write (mid slot copy,
between confirm's state write and its counter burn) cannot be hit reliably from
outside; test_ab_powercut.py covers them deterministically through the monitor's
checkpoint hook.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _ab_world import NOW, AbWorld, make_ab_world

import bastion
from bastion.boot.factory import flash_os, manufacture_device
from bastion.boot.slots import STAGING_DIR
from bastion.cli.device_run_cmds import MAX_BOOTS_PER_RUN
from bastion.hw.chip import Chip
from bastion.hw.flash import BootState, Slot
from bastion.images.os_build import build_os_image
from bastion.images.package import inspect_image
from bastion.os.exitcodes import EXIT_REBOOT

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("_ab_driver.py")
#: A short trial bound so the hang test takes seconds.
TRIAL_TIMEOUT_S = 3
#: Nothing listens there; the scripted OS does not attest.
SERVICE = "http://127.0.0.1:9"
RUN_TIMEOUT_S = 90


@dataclass(frozen=True)
class Images:
    world: AbWorld
    driver_100: Path
    driver_110: Path
    broken_110: Path


def _driver_image(root: Path, world: AbWorld, version: str, svn: int) -> Path:
    tree = root / f"src-{version}"
    shutil.copytree(Path(bastion.__file__).parent, tree / "bastion", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(DRIVER, tree / "bastion" / "os" / "__main__.py")
    return build_os_image(root / f"driver-{version}.img", version, svn, world.os_key, source_root=tree / "bastion").path


def bastion_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    root = tmp_path_factory.mktemp("ab-process")
    world = make_ab_world(root, trial_timeout_s=TRIAL_TIMEOUT_S)
    broken = root / "broken-1.1.0.img"
    built = bastion_cli(
        "os", "build", "--version", "1.1.0", "--security-version", "2", "--key",
        str(world.root / "vendor" / "os-signing.key"), "--fault", "fail-at-start", "-o", str(broken), cwd=root,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return Images(world, _driver_image(root, world, "1.0.0", 1), _driver_image(root, world, "1.1.0", 2), broken)


class Device:
    def __init__(self, images: Images, name: str, plan: list[list[list[Any]]], stage: Path | None = None) -> None:
        self.dev = images.world.root / "devices" / name
        manufacture_device(self.dev, images.world.vendor, now=NOW)
        flash_os(self.dev, images.driver_100)
        self.state_dir = self.dev / "os-state"
        (self.dev / STAGING_DIR).mkdir(parents=True)
        (self.state_dir / "plan.json").write_text(json.dumps({"boots": plan}))
        if stage is not None:
            shutil.copyfile(stage, self.dev / STAGING_DIR / "new.img")
        self.chip = Chip.open(self.dev)

    def run(self) -> subprocess.CompletedProcess[str]:
        return bastion_cli("device", "run", "--dir", str(self.dev), "--service", SERVICE, cwd=self.dev.parent)

    def run_until(self, marker: str) -> None:
        """Start ``device run``, wait for the driver's marker, then cut the power (SIGKILL the group)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "bastion.cli.main", "device", "run", "--dir", str(self.dev), "--service", SERVICE],
            cwd=self.dev.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while not (self.state_dir / marker).exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"device run ended ({process.returncode}) before {marker}")
                time.sleep(0.05)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @property
    def boots(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.state_dir / "boots.jsonl").read_text().splitlines()]

    @property
    def ops(self) -> list[dict[str, Any]]:
        path = self.state_dir / "ops.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @property
    def state(self) -> BootState:
        return self.chip.flash.read_boot_state()

    @property
    def os_counter(self) -> int:
        return self.chip.fuses.counter("os")

    def slot_version(self, slot: Slot) -> str:
        with self.chip.flash.open(slot.flash_partition) as stream:
            return inspect_image(stream).version


def said(done: subprocess.CompletedProcess[str]) -> str:
    """What ``device run`` reported, with the terminal's line wrapping undone."""
    return " ".join(done.stderr.split())


def _booted(record: dict[str, Any]) -> tuple[str, str, bool]:
    return (record["version"], record["slot"], record["trial"])


def test_good_update_trial_boots_confirms_and_raises_the_counter(images: Images) -> None:
    device = Device(
        images, "good", [[["install", "new.img"], ["exit", EXIT_REBOOT]], [["confirm"]]], stage=images.driver_110
    )
    done = device.run()
    assert done.returncode == 0, done.stderr
    assert [_booted(b) for b in device.boots] == [("1.0.0", "A", False), ("1.1.0", "B", True)]
    assert "rebooting: the OS asked to reboot" in said(done)
    assert "(trial: must confirm within 3 s)" in said(done)
    assert device.state == BootState(Slot.B, None, 0, None)
    assert device.os_counter == 2
    assert device.slot_version(Slot.A) == "1.0.0"  # the old OS is still there


def test_broken_os_rolls_back_by_itself_and_the_counter_stays(images: Images) -> None:
    device = Device(
        images, "broken", [[["install", "new.img"], ["exit", EXIT_REBOOT]], [["ack"]]], stage=images.broken_110
    )
    done = device.run()
    assert done.returncode == 0, done.stderr
    # boot 1: 1.0.0 installs; boot 2: the broken 1.1.0 trial exits 1 at start (it logs nothing);
    # boot 3: the bootloader rolls back to 1.0.0, which sees the event and acknowledges it.
    assert "rebooting: the trial OS exited with status 1" in said(done)
    assert "boot event: rollback from OS 1.1.0 to OS 1.0.0" in said(done)
    first, back = device.boots
    assert _booted(first) == ("1.0.0", "A", False)
    assert _booted(back) == ("1.0.0", "A", False)
    assert back["last_event"]["kind"] == "rollback"
    assert (back["last_event"]["from_version"], back["last_event"]["to_version"]) == ("1.1.0", "1.0.0")
    assert back["counters"]["os"] == 1
    assert device.os_counter == 1  # not raised for the OS that never confirmed
    assert device.state == BootState(Slot.A, None, 0, None)  # acknowledged


def test_a_trial_that_never_confirms_is_stopped_and_rolled_back(images: Images) -> None:
    device = Device(
        images,
        "hang",
        [[["install", "new.img"], ["exit", EXIT_REBOOT]], [["hang"]], [["exit", 0]]],
        stage=images.driver_110,
    )
    started = time.monotonic()
    done = device.run()
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= TRIAL_TIMEOUT_S
    assert "the trial OS did not confirm in time" in said(done)
    assert [_booted(b) for b in device.boots] == [("1.0.0", "A", False), ("1.1.0", "B", True), ("1.0.0", "A", False)]
    assert device.boots[2]["last_event"]["from_version"] == "1.1.0"
    assert device.os_counter == 1


def test_an_os_that_keeps_asking_to_reboot_is_bounded(images: Images) -> None:
    device = Device(images, "loop", [[["exit", EXIT_REBOOT]]] * (MAX_BOOTS_PER_RUN + 2))
    done = device.run()
    assert done.returncode == EXIT_REBOOT
    assert f"booted {MAX_BOOTS_PER_RUN} times in one run" in said(done)
    assert len(device.boots) == MAX_BOOTS_PER_RUN


# --- power cuts: SIGKILL to the whole device at each step, then power on again -------------------


def test_power_cut_after_staging(images: Images) -> None:
    plan = [[["mark", "cut"], ["hang"]], [["install", "new.img"], ["exit", EXIT_REBOOT]], [["confirm"]]]
    device = Device(images, "cut-staged", plan, stage=images.driver_110)
    device.run_until("cut")
    assert device.state == BootState(active_slot=Slot.A)
    done = device.run()
    assert done.returncode == 0, done.stderr
    assert [_booted(b) for b in device.boots][1:] == [("1.0.0", "A", False), ("1.1.0", "B", True)]
    assert (device.state.active_slot, device.os_counter) == (Slot.B, 2)


def test_power_cut_after_arming_before_the_reboot(images: Images) -> None:
    plan = [[["install", "new.img"], ["mark", "cut"], ["hang"]], [["confirm"]]]
    device = Device(images, "cut-armed", plan, stage=images.driver_110)
    device.run_until("cut")
    assert device.state == BootState(Slot.A, Slot.B, 1, None)
    done = device.run()  # power on: the armed trial boots, and confirms
    assert done.returncode == 0, done.stderr
    assert _booted(device.boots[1]) == ("1.1.0", "B", True)
    assert (device.state, device.os_counter) == (BootState(Slot.B, None, 0, None), 2)


def test_power_cut_during_the_trial_before_confirm(images: Images) -> None:
    plan = [[["install", "new.img"], ["exit", EXIT_REBOOT]], [["mark", "cut"], ["hang"]], [["ack"]]]
    device = Device(images, "cut-trial", plan, stage=images.driver_110)
    device.run_until("cut")
    assert device.state == BootState(Slot.A, Slot.B, 0, None)  # the attempt was spent before the trial ran
    done = device.run()
    assert done.returncode == 0, done.stderr
    back = device.boots[2]
    assert _booted(back) == ("1.0.0", "A", False)
    assert back["last_event"]["kind"] == "rollback"
    assert device.os_counter == 1
    assert device.state == BootState(Slot.A, None, 0, None)


def test_power_cut_after_confirm(images: Images) -> None:
    plan = [[["install", "new.img"], ["exit", EXIT_REBOOT]], [["confirm"], ["mark", "cut"], ["hang"]], []]
    device = Device(images, "cut-confirmed", plan, stage=images.driver_110)
    device.run_until("cut")
    done = device.run()
    assert done.returncode == 0, done.stderr
    assert _booted(device.boots[2]) == ("1.1.0", "B", False)
    assert (device.state, device.os_counter) == (BootState(Slot.B, None, 0, None), 2)
    assert device.slot_version(Slot.A) == "1.0.0"
