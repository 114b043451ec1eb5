"""Boot stage 0, the ROM: verify and measure the bootloader, derive CDI_BL.

The ROM trusts only the fuses. It checks, in order:

1. the chip is secured (lifecycle SECURED, boot key hash burned);
2. the bootloader partition holds a boot-signing key whose SHA-256 equals the
   fused ``boot_key_hash`` (constant-time compare);
3. the bootloader image package verifies under that key (format, signature,
   payload digest), is of type ``bootloader``, and its security version is not
   below the fuse counter ``"bootloader"``;
4. its payload is a valid boot configuration.

Then it measures the bootloader (SHA-256 of the package, as for every image),
derives ``CDI_BL = derive_cdi(UDS, measurement)`` and the DeviceID key pair
``derive_key_pair(UDS)`` (TCG DICE layer 0). The bootloader receives the CDI
and the DeviceID key, never the UDS.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass, field

from bastion.boot.config import BOOTLOADER_LIMITS, BootConfig, decode_bootloader_partition
from bastion.boot.errors import BootloaderVerificationError, ChipNotReadyError
from bastion.crypto.dice import derive_cdi, derive_key_pair
from bastion.crypto.keys import PrivateKey, public_key_bytes
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError
from bastion.hw.flash import Partition
from bastion.hw.fuses import FuseState, Lifecycle
from bastion.images.errors import ImageError, ImageSignatureError
from bastion.images.package import ImageHeader, ImageType, verify_image

__all__ = ["BOOTLOADER_COUNTER", "RomOutput", "load_bootloader", "run_rom"]

#: Name of the fuse counter that holds the bootloader's minimum security version.
BOOTLOADER_COUNTER = "bootloader"


@dataclass(frozen=True)
class RomOutput:
    """What the ROM hands to the bootloader. ``cdi`` and ``device_id_key`` never leave boot."""

    fuses: FuseState
    config: BootConfig
    header: ImageHeader
    measurement: bytes
    cdi: bytes = field(repr=False)
    device_id_key: PrivateKey = field(repr=False)


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
    config = BootConfig.from_json(image[len(image) - header.payload_size :])
    return fuses, config, header, hashlib.sha256(image).digest()


def run_rom(chip: Chip) -> RomOutput:
    """Run the ROM stage: verify and measure the bootloader, derive CDI_BL and the DeviceID key.

    Raises:
        ChipNotReadyError, BootloaderVerificationError, BootConfigError: see
            :func:`load_bootloader`; also if the UDS is unreadable.
    """
    fuses, config, header, measurement = load_bootloader(chip)
    try:
        uds = chip.read_uds()
    except HwError as exc:
        raise ChipNotReadyError("the unique device secret is unreadable", check="uds") from exc
    return RomOutput(fuses, config, header, measurement, derive_cdi(uds, measurement), derive_key_pair(uds))
