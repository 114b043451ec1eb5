"""Boot stage 0, the ROM: verify and measure the bootloader, derive CDI_BL.

The ROM trusts only the fuses. It checks, in order:

1. the chip is secured (lifecycle SECURED, boot key hash burned);
2. the bootloader partition holds a boot-signing key whose SHA-256 equals the
   fused ``boot_key_hash`` (constant-time compare);
3. the bootloader image package verifies under that key (format, signature,
   payload digest), is of type ``bootloader``, and its security version is not
   below the fuse counter ``"bootloader"``;
4. its payload is a bootloader archive (the boot stage's and the monitor's code,
   see :mod:`bastion.boot.bootloader_image`) holding a valid boot configuration.

Then it measures the bootloader (SHA-256 of the package, as for every image:
code and configuration), derives ``CDI_BL = derive_cdi(UDS, measurement)`` and
the DeviceID key pair ``derive_key_pair(UDS)`` (TCG DICE layer 0), and unpacks
the verified payload to ``DEV/run/bl-<measurement hex[:16]>/`` (an intact
unpacking is reused, a tampered one replaced). Every check reads the one copy
of the partition read into memory. The bootloader stage, run from that
directory as its own process (:mod:`bastion.boot.chain`), receives the CDI and
the DeviceID key, never the UDS.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass, field
from pathlib import Path

from bastion.boot.bootloader_image import install_bootloader_runtime, read_boot_config
from bastion.boot.config import BOOTLOADER_LIMITS, RUN_DIR, BootConfig, decode_bootloader_partition
from bastion.boot.errors import BootloaderVerificationError, ChipNotReadyError
from bastion.crypto.dice import derive_cdi, derive_key_pair
from bastion.crypto.keys import PrivateKey, public_key_bytes
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError
from bastion.hw.flash import Partition
from bastion.hw.fuses import FuseState, Lifecycle
from bastion.images.errors import ImageError, ImageSignatureError
from bastion.images.package import ImageHeader, ImageType, verify_image

__all__ = ["BOOTLOADER_COUNTER", "RomOutput", "bootloader_runtime_dir", "load_bootloader", "run_rom"]

#: Name of the fuse counter that holds the bootloader's minimum security version.
BOOTLOADER_COUNTER = "bootloader"


@dataclass(frozen=True)
class RomOutput:
    """What the ROM hands to the bootloader stage. ``cdi`` and ``device_id_key`` never leave boot.

    Attributes:
        fuses: the fuses as the ROM read them.
        config: the verified boot configuration.
        measurement: SHA-256 of the bootloader package (``fwid[0]``).
        cdi: ``CDI_BL``.
        device_id_key: the DeviceID private key.
        runtime_dir: the unpacked bootloader payload; the stage and the monitor run from it.
    """

    fuses: FuseState
    config: BootConfig
    measurement: bytes
    cdi: bytes = field(repr=False)
    device_id_key: PrivateKey = field(repr=False)
    runtime_dir: Path


def _read_fuses(chip: Chip) -> FuseState:
    try:
        fuses = chip.fuses.read()
    except HwError as exc:
        raise ChipNotReadyError(f"the fuse bank is unreadable ({exc})", check="fuses") from exc
    if fuses.lifecycle is not Lifecycle.SECURED or fuses.boot_key_hash is None:
        raise ChipNotReadyError(
            f"the chip is {fuses.lifecycle.value}, not secured: manufacture it with `bastion device manufacture`",
            check="lifecycle",
        )
    return fuses


def load_bootloader(chip: Chip) -> tuple[FuseState, BootConfig, ImageHeader, bytes]:
    """Verify the bootloader partition against the fuses (checks 1-4 above).

    Returns:
        The fuses, the boot configuration, the bootloader header and its measurement.

    Raises:
        ChipNotReadyError: the chip is not secured.
        BootloaderVerificationError: any bootloader check fails.
        BootConfigError: the boot configuration is unusable.
    """
    fuses, config, header, measurement, _ = _load(chip)
    return fuses, config, header, measurement


def _load(chip: Chip) -> tuple[FuseState, BootConfig, ImageHeader, bytes, bytes]:
    fuses = _read_fuses(chip)
    try:
        partition = chip.flash.read(Partition.BOOTLOADER)
    except HwError as exc:
        raise BootloaderVerificationError(f"cannot read the bootloader partition ({exc})", check="present") from exc
    boot_key, image = decode_bootloader_partition(partition)
    fused = fuses.boot_key_hash or b""
    if not hmac.compare_digest(hashlib.sha256(public_key_bytes(boot_key)).digest(), fused):
        raise BootloaderVerificationError("bootloader signature does not match the fused boot key", check="boot key")
    try:
        header = verify_image(io.BytesIO(image), [boot_key], limits=BOOTLOADER_LIMITS)
    except ImageSignatureError as exc:
        raise BootloaderVerificationError(
            "bootloader signature does not match the fused boot key", check="signature"
        ) from exc
    except ImageError as exc:
        raise BootloaderVerificationError(f"the bootloader image is invalid: {exc}", check="image") from exc
    if header.image_type is not ImageType.BOOTLOADER:
        raise BootloaderVerificationError("the bootloader partition holds a non-bootloader image", check="type")
    minimum = fuses.counters.get(BOOTLOADER_COUNTER, 0)
    if header.security_version < minimum:
        raise BootloaderVerificationError(
            f"bootloader security version {header.security_version} is below the anti-rollback counter {minimum}",
            check="rollback",
        )
    config = read_boot_config(image, header)
    return fuses, config, header, hashlib.sha256(image).digest(), image


def bootloader_runtime_dir(dev_dir: Path, measurement: bytes) -> Path:
    """Where the ROM unpacks the bootloader of ``measurement``."""
    return dev_dir / RUN_DIR / f"bl-{measurement.hex()[:16]}"


def run_rom(chip: Chip) -> RomOutput:
    """Run the ROM stage: verify, measure and unpack the bootloader, derive CDI_BL and the DeviceID key.

    Raises:
        ChipNotReadyError, BootloaderVerificationError, BootConfigError: see
            :func:`load_bootloader`; also if the UDS is unreadable, or the
            payload cannot be unpacked (check ``archive``).
    """
    fuses, config, header, measurement, image = _load(chip)
    runtime_dir = bootloader_runtime_dir(chip.dev_dir, measurement)
    install_bootloader_runtime(image, header, runtime_dir)
    try:
        uds = chip.read_uds()
    except HwError as exc:
        raise ChipNotReadyError("the unique device secret is unreadable", check="uds") from exc
    return RomOutput(fuses, config, measurement, derive_cdi(uds, measurement), derive_key_pair(uds), runtime_dir)
