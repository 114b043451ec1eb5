"""A read-only description of an emulated device, for ``bastion device info``.

It reads public state only (fuses, the DeviceID certificate, slot headers, the
recovery record, the config partition's ``insecure_no_sandbox`` option); it
never reads the UDS and verifies nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.boot.recovery import RecoveryState, read_recovery
from bastion.crypto import certs
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import device_id_from_public_key
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError
from bastion.hw.flash import Partition, Slot
from bastion.images.errors import ImageError
from bastion.images.package import inspect_image, measure_stream

__all__ = ["DeviceInfo", "SlotInfo", "describe_device"]


@dataclass(frozen=True)
class SlotInfo:
    """What an OS slot holds (unverified: read from the image header)."""

    slot: str
    version: str | None = None
    security_version: int | None = None
    measurement: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """Public state of an emulated device."""

    device_id: str | None
    lifecycle: str
    debug_locked: bool
    boot_key_hash: str | None
    counters: dict[str, int]
    active_slot: str | None
    slots: tuple[SlotInfo, ...]
    recovery: RecoveryState | None
    trial_slot: str | None = None
    last_event: dict[str, Any] | None = None
    chip_model: str | None = None
    #: The device runs its OS and apps without sandboxes (``--insecure-no-sandbox``).
    insecure_no_sandbox: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {
            "device_id": self.device_id,
            "lifecycle": self.lifecycle,
            "debug_locked": self.debug_locked,
            "boot_key_hash": self.boot_key_hash,
            "counters": self.counters,
            "active_slot": self.active_slot,
            "trial_slot": self.trial_slot,
            "last_event": self.last_event,
            "slots": [vars(s) for s in self.slots],
            "recovery": None if self.recovery is None else self.recovery.to_json(),
            "chip_model": self.chip_model,
            "insecure_no_sandbox": self.insecure_no_sandbox,
        }


def _model_name(chip: Chip) -> str | None:
    try:
        return chip.model().name
    except HwError:
        return None


def _slot_info(chip: Chip, slot: Slot) -> SlotInfo:
    if chip.flash.is_empty(slot.flash_partition):
        return SlotInfo(slot.value)
    try:
        with chip.flash.open(slot.flash_partition) as stream:
            header = inspect_image(stream)
            stream.seek(0)
            measurement = measure_stream(stream).hex()
    except (HwError, ImageError) as exc:
        return SlotInfo(slot.value, problem=str(exc))
    return SlotInfo(slot.value, header.version, header.security_version, measurement)


def _insecure_no_sandbox(chip: Chip) -> bool:
    """The config partition's ``insecure_no_sandbox`` (the OS's config format; only this key is read here)."""
    try:
        value = json.loads(chip.flash.read(Partition.CONFIG))
    except (HwError, ValueError):
        return False
    return isinstance(value, dict) and value.get("insecure_no_sandbox") is True


def describe_device(dev_dir: Path) -> DeviceInfo:
    """Describe the chip in ``dev_dir``.

    Raises:
        ChipNotFoundError: there is no chip.
        StateCorruptError: the fuse bank or boot state is unreadable.
    """
    chip = Chip.open(dev_dir)
    fuses = chip.fuses.read()
    try:
        key = certs.load_certificate_der(chip.read_device_id_cert()).public_key()
        device_id = device_id_from_public_key(key) if isinstance(key, ec.EllipticCurvePublicKey) else None
    except (HwError, CryptoError):
        device_id = None
    boot_state = chip.flash.read_boot_state()
    active = boot_state.active_slot
    return DeviceInfo(
        device_id=device_id,
        lifecycle=fuses.lifecycle.value,
        debug_locked=fuses.debug_locked,
        boot_key_hash=None if fuses.boot_key_hash is None else fuses.boot_key_hash.hex(),
        counters=dict(fuses.counters),
        active_slot=None if active is None else active.value,
        slots=tuple(_slot_info(chip, slot) for slot in Slot),
        recovery=read_recovery(dev_dir),
        trial_slot=None if boot_state.trial_slot is None else boot_state.trial_slot.value,
        last_event=None if boot_state.last_event is None else boot_state.last_event.to_json(),
        chip_model=_model_name(chip),
        insecure_no_sandbox=_insecure_no_sandbox(chip),
    )
