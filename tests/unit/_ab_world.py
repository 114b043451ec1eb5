"""A/B update test world: a vendor, OS images 1.0.0 / 1.1.0 / 1.1.0-broken, and an in-process device.

:class:`AbDevice` boots with the real boot chain (:func:`boot_device`) and serves
the real :class:`MonitorServer` in-process (requests go through ``handle``, the
same code path as the socket loop), so each test can cut the power at any
durable write through the server's ``checkpoint`` hook.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.boot import boot_device
from bastion.boot.factory import flash_os, manufacture_device
from bastion.boot.result import BootResult
from bastion.boot.slots import STAGING_DIR, Checkpoint
from bastion.boot.vendor import Vendor, init_vendor, load_vendor
from bastion.cli.device_run_cmds import identity_from_boot
from bastion.crypto.keys import PrivateKey, load_private_key_pem
from bastion.hw.chip import Chip
from bastion.hw.flash import BootState, Slot
from bastion.images.os_build import build_os_image
from bastion.images.package import inspect_image
from bastion.monitor import protocol as wire
from bastion.monitor.server import MonitorServer

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class PowerCut(BaseException):
    """Raised by a checkpoint: the process dies right there (nothing catches a BaseException)."""


def cut_at(step: str) -> Checkpoint:
    """A checkpoint hook that cuts the power after the durable write named ``step``."""

    def hook(reached: str) -> None:
        if reached == step:
            raise PowerCut(step)

    return hook


@dataclass(frozen=True)
class AbWorld:
    root: Path
    vendor: Vendor
    os_key: PrivateKey
    v100: Path  # 1.0.0, security version 1
    v110: Path  # 1.1.0, security version 2
    broken: Path  # 1.1.0, security version 2, fault "fail-at-start"

    def device(self, name: str) -> AbDevice:
        dev = self.root / "devices" / name
        manufacture_device(dev, self.vendor, now=NOW)
        flash_os(dev, self.v100)
        return AbDevice(dev)

    def image(self, name: str, version: str, svn: int) -> Path:
        return build_os_image(self.root / name, version, svn, self.os_key).path


def make_ab_world(root: Path, *, trial_boot_limit: int = 1, trial_timeout_s: int = 60) -> AbWorld:
    paths = init_vendor(root / "vendor", now=NOW, trial_boot_limit=trial_boot_limit, trial_timeout_s=trial_timeout_s)
    key = load_private_key_pem(paths.os_key.read_bytes())
    v100 = build_os_image(root / "os-1.0.0.img", "1.0.0", 1, key).path
    v110 = build_os_image(root / "os-1.1.0.img", "1.1.0", 2, key).path
    broken = build_os_image(root / "os-1.1.0-broken.img", "1.1.0", 2, key, fault="fail-at-start").path
    return AbWorld(root, load_vendor(paths.root), key, v100, v110, broken)


class AbDevice:
    """One emulated device driven in-process: boot, then talk to its monitor."""

    def __init__(self, dev: Path) -> None:
        self.dev = dev
        self.chip = Chip.open(dev)
        self.server: MonitorServer | None = None

    def boot(self, *, checkpoint: Checkpoint | None = None, now: dt.datetime = NOW) -> BootResult:
        result = boot_device(self.dev, now=now)
        self.server = MonitorServer(identity_from_boot(result, self.dev), checkpoint=checkpoint)
        return result

    def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """One monitor request; returns ``{"result": ...}`` or ``{"error": ..., "detail": ...}``."""
        if self.server is None:
            raise AssertionError("boot first")
        return self.server.handle(wire.encode_message({"op": op, "args": args or {}}))

    def ok(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.call(op, args)
        if "result" not in answer:
            raise AssertionError(f"{op} refused: {answer}")
        result: dict[str, Any] = answer["result"]
        return result

    def stage(self, image: Path, name: str = "os.img") -> Path:
        staging = self.dev / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        target = staging / name
        shutil.copyfile(image, target)
        return target

    @property
    def state(self) -> BootState:
        return self.chip.flash.read_boot_state()

    @property
    def os_counter(self) -> int:
        return self.chip.fuses.counter("os")

    def slot_version(self, slot: Slot) -> str:
        with self.chip.flash.open(slot.flash_partition) as stream:
            return inspect_image(stream).version
