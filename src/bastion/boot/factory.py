"""Factory and bench operations: manufacture a chip, flash an OS image.

Manufacture follows the DICE provisioning flow: the chip draws its UDS from its
TRNG, exports its DeviceID public key (derived from the UDS), and the vendor CA
endorses it. The fuses are burned (boot key hash, debug lock, lifecycle) and the
bootloader written. Everything is built in a staging directory and renamed into
place at the end, so a failure never leaves a half-made chip.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from bastion.boot.config import encode_bootloader_partition
from bastion.boot.errors import BootError, FlashImageError, ManufactureError
from bastion.boot.rom import load_bootloader
from bastion.boot.slots import OS_COUNTER, verify_os_image
from bastion.boot.vendor import Vendor
from bastion.crypto import certs
from bastion.crypto.dice import derive_key_pair
from bastion.crypto.keys import device_id_from_public_key, public_key_bytes
from bastion.hw.atomic import fsync_dir, remove_tree
from bastion.hw.chip import Chip
from bastion.hw.chipmodel import DEFAULT_MODEL
from bastion.hw.errors import HwError
from bastion.hw.flash import BootState, Partition, Slot
from bastion.hw.fuses import Lifecycle
from bastion.hw.trng import Trng
from bastion.images.errors import ImageError
from bastion.images.package import ImageHeader, measure_stream

__all__ = ["FlashOutcome", "flash_os", "manufacture_device"]


def manufacture_device(
    dev_dir: Path, vendor: Vendor, *, now: dt.datetime, trng: Trng | None = None, model: str = DEFAULT_MODEL
) -> str:
    """Manufacture a secured chip of ``model`` in ``dev_dir`` and return its device ID.

    Raises:
        ManufactureError: ``dev_dir`` already holds a chip or is not empty, or the model is unknown.
    """
    if Chip.exists(dev_dir):
        raise ManufactureError(f"{dev_dir} already holds a chip")
    if dev_dir.exists() and (not dev_dir.is_dir() or any(dev_dir.iterdir())):
        raise ManufactureError(f"{dev_dir} exists and is not an empty directory")
    dev_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = dev_dir.parent / f".{dev_dir.name}.{secrets.token_hex(4)}.manufacturing"
    try:
        chip = Chip.manufacture(staging, trng=trng, model=model)
        device_key = derive_key_pair(chip.read_uds()).public_key()
        cert = certs.issue_device_id_cert(vendor.ca_key, vendor.ca_cert, device_key, now=now)
        chip.store_device_id_cert(certs.certificate_der(cert))
        chip.fuses.advance_lifecycle(Lifecycle.MANUFACTURED)
        chip.flash.write(
            Partition.BOOTLOADER, encode_bootloader_partition(vendor.boot_public_key, vendor.bootloader_image)
        )
        chip.fuses.burn_boot_key_hash(hashlib.sha256(public_key_bytes(vendor.boot_public_key)).digest())
        chip.fuses.lock_debug()
        chip.fuses.advance_lifecycle(Lifecycle.SECURED)
        staging.rename(dev_dir)
        fsync_dir(dev_dir.parent)
    except HwError as exc:
        raise ManufactureError(f"manufacture failed: {exc}") from exc
    finally:
        remove_tree(staging)
    return device_id_from_public_key(device_key)


@dataclass(frozen=True)
class FlashOutcome:
    """What :func:`flash_os` wrote."""

    slot: Slot
    header: ImageHeader
    measurement: bytes
    activated: bool


def flash_os(dev_dir: Path, image: Path, *, slot: Slot | None = None, activate: bool = False) -> FlashOutcome:
    """Verify an OS image against the device's pinned OS keys and write it to a slot.

    The default slot is the active one (or A on a fresh device). The slot becomes
    active if no slot is active yet, or if ``activate`` is set.

    Raises:
        FlashImageError: no chip, its bootloader does not verify, or the image is
            not an OS image signed by a pinned key, or is below the rollback counter.
    """
    try:
        chip = Chip.open(dev_dir)
        state = chip.flash.read_boot_state()
        fuses, config, _, _ = load_bootloader(chip)
    except (HwError, BootError) as exc:
        raise FlashImageError(f"the device cannot take an OS: {exc}") from exc
    target = slot or state.active_slot or Slot.A
    try:
        with image.open("rb") as stream:
            header = verify_os_image(stream, config, fuses.counters.get(OS_COUNTER, 0), what=str(image))
            stream.seek(0)
            measurement = measure_stream(stream)
            stream.seek(0)
            chip.flash.remove_stale_writes(target.flash_partition)
            chip.flash.write_stream(target.flash_partition, stream)
    except ImageError as exc:
        raise FlashImageError(f"{image} is refused: {exc}") from exc
    except (OSError, HwError) as exc:
        raise FlashImageError(f"cannot flash {image}: {exc}") from exc
    activated = activate or state.active_slot is None

    def bench(state: BootState) -> BootState:
        # A bench flash overrides any armed trial that involves the slot it wrote.
        if activated:
            return replace(state, active_slot=target, trial_slot=None, attempts_left=0)
        if state.trial_slot is target:
            return replace(state, trial_slot=None, attempts_left=0)
        return state

    try:
        chip.flash.update_boot_state(bench)
    except HwError as exc:
        raise FlashImageError(f"cannot update the boot state: {exc}") from exc
    return FlashOutcome(target, header, measurement, activated)
