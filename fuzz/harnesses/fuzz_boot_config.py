"""Fuzz the bootloader's own inputs (:mod:`bastion.boot.config`): ``boot-config.json`` and the partition layout.

``boot-config.json`` travels in the bootloader image and pins the OS-publisher
keys; the bootloader partition is read from flash at every boot.

Documented errors: :class:`BootConfigError` and :class:`BootloaderVerificationError`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.boot.config import BootConfig, decode_bootloader_partition, encode_bootloader_partition
from bastion.boot.errors import BootConfigError, BootloaderVerificationError

_KEY = ec.derive_private_key(0xB457_7001, ec.SECP256R1()).public_key()
_OTHER = ec.derive_private_key(0xB457_7002, ec.SECP256R1()).public_key()
#: First byte of an input: which parser reads the rest.
_CONFIG, _PARTITION = 0, 1
SEEDS: list[bytes] = [
    bytes([_CONFIG]) + BootConfig((_KEY,)).to_json(),
    bytes([_CONFIG]) + BootConfig((_KEY, _OTHER), trial_boot_limit=2, trial_timeout_s=30).to_json(),
    bytes([_PARTITION]) + encode_bootloader_partition(_KEY, b"image bytes"),
]


def test_one_input(data: bytes) -> None:
    """Parse ``data[1:]`` as ``data[0]`` selects."""
    if not data:
        return
    try:
        if data[0] % 2 == _CONFIG:
            BootConfig.from_json(data[1:])
        else:
            decode_bootloader_partition(data[1:])
    except (BootConfigError, BootloaderVerificationError):
        return
