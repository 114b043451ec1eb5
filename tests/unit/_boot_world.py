"""A vendor, an OS image and a manufactured, flashed device, shared by boot and CLI tests."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from bastion.boot.factory import flash_os, manufacture_device
from bastion.boot.vendor import Vendor, init_vendor, load_vendor
from bastion.crypto.keys import PrivateKey, load_private_key_pem
from bastion.images.os_build import build_os_image

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class World:
    root: Path
    vendor: Vendor
    os_key: PrivateKey
    os_v1: Path  # 1.0.0, security version 1
    os_v2: Path  # 2.0.0, security version 2

    def device(self, name: str, *, image: Path | None = None) -> Path:
        dev = self.root / "devices" / name
        manufacture_device(dev, self.vendor, now=NOW)
        flash_os(dev, image or self.os_v1)
        return dev


def make_world(root: Path) -> World:
    paths = init_vendor(root / "vendor", now=NOW)
    vendor = load_vendor(paths.root)
    os_key = load_private_key_pem(paths.os_key.read_bytes())
    v1 = build_os_image(root / "os-1.img", "1.0.0", 1, os_key).path
    v2 = build_os_image(root / "os-2.img", "2.0.0", 2, os_key).path
    return World(root, vendor, os_key, v1, v2)


def copy_device(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
