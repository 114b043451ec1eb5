"""The signed boot configuration, the bootloader image's bounds and the partition layout.

The bootloader image package (type ``bootloader``) carries as its payload a
runtime archive (:data:`bastion.images.os_payload.BOOTLOADER_RUNTIME`, the
format of OS images): the sources of the boot stage and the monitor
(:data:`BOOTLOADER_PACKAGES`) and, at the archive root, the boot configuration
``boot-config.json`` (:data:`BOOT_CONFIG_FILE`). The whole payload is signed
(through the package) by the vendor's boot key and measured by the ROM, so the
code that runs the bootloader stage and the monitor is part of ``CDI_BL``
(:mod:`bastion.boot.bootloader_image`). The boot configuration is a JSON
object::

    {"format": 1, "os_publisher_keys": ["-----BEGIN PUBLIC KEY-----\\n..."],
     "trial_boot_limit": 1, "trial_timeout_s": 60}

``trial_boot_limit`` is how many times a newly installed OS is trial-booted
before the bootloader returns to the active slot; ``trial_timeout_s`` is how
long a trial OS may run without confirming before ``device run`` reboots it.
``trial_timeout_s`` is optional when parsing (configurations signed before it
existed get the default).

The bootloader partition stores the boot-signing public key next to the image,
because the fuses hold only its hash (all integers big-endian)::

    magic        8 bytes  b"BSTNBLP\\x00"
    key_length   u16      length of the key that follows (65)
    boot_key     bytes    SEC1 uncompressed P-256 public key of the boot signer
    image        bytes    the bootloader image package, to the end of the partition

The ROM accepts the key only if its SHA-256 equals the fused ``boot_key_hash``,
then verifies the package with it.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from bastion.boot.errors import BootConfigError, BootloaderVerificationError
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PublicKey, load_public_key_bytes, load_public_key_pem, public_key_bytes, public_key_pem
from bastion.images.os_payload import BOOT_CONFIG_FILE, OsArchiveLimits
from bastion.images.package import ImageLimits

__all__ = [
    "BOOTLOADER_ARCHIVE_LIMITS",
    "BOOTLOADER_COMPONENT_ID",
    "BOOTLOADER_LIMITS",
    "BOOTLOADER_PACKAGES",
    "BOOT_CONFIG_FILE",
    "MAX_BOOTLOADER_PAYLOAD_BYTES",
    "MAX_BOOT_CONFIG_BYTES",
    "MAX_OS_PUBLISHER_KEYS",
    "MAX_TRIAL_BOOT_LIMIT",
    "MAX_TRIAL_TIMEOUT_S",
    "RUN_DIR",
    "BootConfig",
    "decode_bootloader_partition",
    "encode_bootloader_partition",
]

#: The component ID of the Bastion bootloader (fixed: a UUIDv5 of its URN).
BOOTLOADER_COMPONENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:bastion:component:bootloader"))
#: Bounds on the boot configuration.
MAX_BOOT_CONFIG_BYTES = 64 * 1024
MAX_OS_PUBLISHER_KEYS = 8
MAX_TRIAL_BOOT_LIMIT = 16
#: Bound on the trial timeout (a day): a trial that never confirms must end.
MAX_TRIAL_TIMEOUT_S = 24 * 3600
#: Defaults: one trial boot, one minute to prove health.
DEFAULT_TRIAL_BOOT_LIMIT = 1
DEFAULT_TRIAL_TIMEOUT_S = 60
_FIELDS = frozenset({"format", "os_publisher_keys", "trial_boot_limit"})
#: Subpackages of ``bastion`` in the bootloader image (plus ``bastion/__init__.py``): the boot
#: stage, the monitor, and what they import. A test runs both from an unpacked image alone.
BOOTLOADER_PACKAGES = ("boot", "monitor", "hw", "images", "crypto", "jsonlog")
#: Bound on the bootloader image's payload: it must fit the 1 MiB bootloader partition
#: with the partition prefix, the boot key and the signed header.
MAX_BOOTLOADER_PAYLOAD_BYTES = 960 * 1024
#: Parsing bounds for the bootloader image package.
BOOTLOADER_LIMITS = ImageLimits(max_header_bytes=16 * 1024, max_payload_bytes=MAX_BOOTLOADER_PAYLOAD_BYTES)
#: Extraction bounds for the bootloader archive.
BOOTLOADER_ARCHIVE_LIMITS = OsArchiveLimits(
    max_members=512,
    max_member_bytes=256 * 1024,
    max_total_bytes=MAX_BOOTLOADER_PAYLOAD_BYTES,
    max_manifest_bytes=128 * 1024,
)
#: Where verified payloads are unpacked, under the device directory: ``bl-<hex16>``, ``os-<hex16>``.
RUN_DIR = "run"
_PARTITION_MAGIC = b"BSTNBLP\x00"
_PARTITION_PREFIX = struct.Struct(">8sH")
_SEC1_KEY_BYTES = 65


@dataclass(frozen=True)
class BootConfig:
    """What the bootloader trusts: the pinned OS-publisher keys, and trial-boot limits."""

    os_publisher_keys: tuple[PublicKey, ...]
    trial_boot_limit: int = DEFAULT_TRIAL_BOOT_LIMIT
    trial_timeout_s: int = DEFAULT_TRIAL_TIMEOUT_S

    def to_json(self) -> bytes:
        """Return the deterministic JSON encoding (``boot-config.json`` in the bootloader archive)."""
        value = {
            "format": 1,
            "os_publisher_keys": [public_key_pem(k).decode() for k in self.os_publisher_keys],
            "trial_boot_limit": self.trial_boot_limit,
            "trial_timeout_s": self.trial_timeout_s,
        }
        return json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> BootConfig:
        """Parse a boot configuration strictly.

        Raises:
            BootConfigError: oversized, not JSON, a missing or unknown field,
                or a key that is not a P-256 public key.
        """
        if len(data) > MAX_BOOT_CONFIG_BYTES:
            raise BootConfigError("the boot configuration is over its size bound", check="config")
        try:
            value: Any = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise BootConfigError("the boot configuration is not JSON", check="config") from exc
        if not isinstance(value, dict) or set(value) not in (_FIELDS, _FIELDS | {"trial_timeout_s"}):
            raise BootConfigError("the boot configuration does not have the format 1 fields", check="config")
        keys, limit = value["os_publisher_keys"], value["trial_boot_limit"]
        timeout = value.get("trial_timeout_s", DEFAULT_TRIAL_TIMEOUT_S)
        if value["format"] != 1 or not isinstance(keys, list) or not 1 <= len(keys) <= MAX_OS_PUBLISHER_KEYS:
            raise BootConfigError(f"the boot configuration must pin 1..{MAX_OS_PUBLISHER_KEYS} OS keys", check="config")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TRIAL_BOOT_LIMIT:
            raise BootConfigError("trial_boot_limit is out of range", check="config")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TRIAL_TIMEOUT_S:
            raise BootConfigError("trial_timeout_s is out of range", check="config")
        try:
            parsed = tuple(load_public_key_pem(k.encode()) for k in keys if isinstance(k, str))
        except (CryptoError, UnicodeEncodeError) as exc:  # JSON may carry a lone surrogate (fuzz_boot_config)
            raise BootConfigError("a pinned OS key is not a P-256 public key", check="config") from exc
        if len(parsed) != len(keys):
            raise BootConfigError("a pinned OS key is not a PEM string", check="config")
        return cls(parsed, limit, timeout)


def encode_bootloader_partition(boot_key: PublicKey, image: bytes) -> bytes:
    """Return the bootloader partition content: boot-signing public key, then the image."""
    key = public_key_bytes(boot_key)
    return _PARTITION_PREFIX.pack(_PARTITION_MAGIC, len(key)) + key + image


def decode_bootloader_partition(data: bytes) -> tuple[PublicKey, bytes]:
    """Split the bootloader partition into the boot-signing public key and the image.

    Raises:
        BootloaderVerificationError: the partition does not have the layout above.
    """
    head = _PARTITION_PREFIX.size
    if len(data) < head + _SEC1_KEY_BYTES:
        raise BootloaderVerificationError("the bootloader partition is truncated", check="format")
    magic, key_length = _PARTITION_PREFIX.unpack(data[:head])
    if magic != _PARTITION_MAGIC or key_length != _SEC1_KEY_BYTES:
        raise BootloaderVerificationError("the bootloader partition has a bad layout", check="format")
    try:
        key = load_public_key_bytes(data[head : head + key_length])
    except CryptoError as exc:
        raise BootloaderVerificationError("the bootloader partition holds no valid key", check="format") from exc
    return key, data[head + key_length :]
