"""What a successful boot hands to the monitor and the OS. CONTRACT between boot and device run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bastion.crypto.eat import DebugStatus, Measurement
from bastion.crypto.keys import PrivateKey


@dataclass(frozen=True)
class BootResult:
    """The state of a device after ROM and bootloader succeeded.

    ``alias_key`` goes only to the monitor process. The UDS, the CDIs and the
    DeviceID private key are not part of it: they never leave the boot stage.
    """

    alias_key: PrivateKey
    cert_chain: tuple[bytes, bytes]  # DER: (Alias cert, DeviceID cert)
    device_id: str
    measurements: tuple[Measurement, ...]  # ("bootloader", ...), ("os", ...)
    boot_slot: str  # "A" or "B"
    os_version: str
    os_security_version: int
    rollback_counters: dict[str, int]
    secboot: bool
    dbgstat: DebugStatus
    os_runtime_dir: Path  # the verified OS payload, unpacked; the OS process runs from here
    bootloader_runtime_dir: Path  # the verified bootloader payload, unpacked; the stage and the monitor run from here
    trial: bool = False  # the OS runs from a trial slot: it must confirm within trial_timeout_s
    trial_timeout_s: int = 60  # from the signed boot configuration; `device run` enforces it
