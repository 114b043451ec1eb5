"""A vendor, an OS image and a manufactured, flashed device, shared by boot and CLI tests."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import bastion
from bastion.boot.bootloader_image import build_bootloader_image, read_boot_config
from bastion.boot.config import encode_bootloader_partition
from bastion.boot.factory import flash_os, manufacture_device
from bastion.boot.vendor import BOOTLOADER_SECURITY_VERSION, BOOTLOADER_VERSION, Vendor, init_vendor, load_vendor
from bastion.crypto.keys import PrivateKey, load_private_key_pem
from bastion.hw.chip import Chip
from bastion.hw.flash import Partition
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


def patched_sources(root: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of the ``bastion`` sources in ``root`` with ``{path: (old, new)}`` text replacements."""
    tree = root / "bastion"
    shutil.copytree(Path(bastion.__file__).parent, tree, ignore=shutil.ignore_patterns("__pycache__"))
    for name, (old, new) in edits.items():
        text = (tree / name).read_text()
        if old not in text:
            raise AssertionError(f"{old!r} is not in {name}: update the test's patch")
        (tree / name).write_text(text.replace(old, new, 1))
    return tree


def vendor_bootloader(vendor: Vendor, source_root: Path | None = None) -> bytes:
    """A bootloader partition signed by ``vendor``'s boot key, with its boot configuration, from ``source_root``."""
    config = read_boot_config(vendor.bootloader_image, vendor.bootloader_header)
    key = load_private_key_pem(vendor.paths.boot_key.read_bytes())
    image = io.BytesIO()
    build_bootloader_image(
        image,
        config,
        key,
        version=BOOTLOADER_VERSION,
        security_version=BOOTLOADER_SECURITY_VERSION,
        source_root=source_root,
    )
    return encode_bootloader_partition(vendor.boot_public_key, image.getvalue())


def write_bootloader(dev: Path, partition: bytes) -> None:
    """Replace a device's bootloader partition (a bench reflash)."""
    Chip.open(dev).flash.write(Partition.BOOTLOADER, partition)
