"""The Bastion image package format, version 1.

Layout on disk (all integers big-endian)::

    magic            8 bytes   b"BSTNIMG\\x00"
    format_version   u16       1
    header_length    u32       length of the signed header that follows
    signed_header    bytes     COSE_Sign1 (ES256) whose payload is the CBOR header map
    payload          bytes     exactly header.payload_size bytes

The CBOR header map (deterministic encoding) holds: ``magic``, ``format_version``,
``image_type`` ("bootloader" | "os" | "app"), ``component_id`` (UUID string),
``version`` (semantic version string), ``security_version`` (uint),
``payload_size`` (uint), ``payload_digest`` (SHA-256, 32 bytes), and
``signer`` (SHA-256 of the signing public key, a key id). The signature covers
all of them, so it covers the payload through its digest.

The measurement of an image, used by DICE and by the service's known-good
reference values, is the SHA-256 of the whole package file.

STUB: the implementation is being written; signatures below are the contract.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bastion.crypto.keys import PrivateKey, PublicKey

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "ImageHeader",
    "ImageLimits",
    "ImageType",
    "build_image",
    "inspect_image",
    "measure_image",
    "verify_image",
]

MAGIC = b"BSTNIMG\x00"
FORMAT_VERSION = 1


class ImageType(enum.StrEnum):
    """What an image package contains."""

    BOOTLOADER = "bootloader"
    OS = "os"
    APP = "app"


@dataclass(frozen=True)
class ImageLimits:
    """Size bounds applied while parsing an image package."""

    max_header_bytes: int = 16 * 1024
    max_payload_bytes: int = 256 * 1024 * 1024
    chunk_size: int = 1024 * 1024


@dataclass(frozen=True)
class ImageHeader:
    """The signed header of an image package."""

    image_type: ImageType
    component_id: str
    version: str
    security_version: int
    payload_size: int
    payload_digest: bytes
    signer: bytes
    format_version: int = FORMAT_VERSION


def build_image(
    out: BinaryIO,
    payload: BinaryIO,
    *,
    image_type: ImageType,
    component_id: str,
    version: str,
    security_version: int,
    key: PrivateKey,
    limits: ImageLimits = ImageLimits(),
) -> ImageHeader:
    """Write a signed image package for ``payload`` to ``out`` (payload streamed twice: hash, copy; it must be seekable)."""
    raise NotImplementedError


def inspect_image(stream: BinaryIO, *, limits: ImageLimits = ImageLimits()) -> ImageHeader:
    """Parse the header of an image package without checking its signature or payload.

    Raises:
        ImageFormatError: bad magic, unsupported format version, header too
            large or malformed.
    """
    raise NotImplementedError


def verify_image(stream: BinaryIO, trusted_keys: Sequence[PublicKey], *, limits: ImageLimits = ImageLimits()) -> ImageHeader:
    """Verify an image package completely: format, signature by one of ``trusted_keys``, payload size and digest (streamed, bounded).

    Raises:
        ImageFormatError: the package is malformed or oversized.
        ImageSignatureError: no trusted key signed it, or the signature fails.
        ImagePayloadError: the payload is shorter, longer or has another digest.
    """
    raise NotImplementedError


def measure_image(path: Path, *, limits: ImageLimits = ImageLimits()) -> bytes:
    """Return the measurement of an image file: SHA-256 of the whole file, streamed and bounded."""
    raise NotImplementedError
