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

The key id is the SHA-256 of the signer's SEC1 uncompressed public key (the
same encoding the device ID uses); see :func:`key_id`.

The measurement of an image, used by DICE and by the service's known-good
reference values, is the SHA-256 of the whole package file.

Parsing is strict and bounded: the header map must hold exactly the fields above
with the right types; the header and payload sizes are bounded by
:class:`ImageLimits`; the payload is hashed in chunks; and a package with any
byte after the declared payload is refused (a stream that never ends cannot
make the verifier read more than ``payload_size + 1`` bytes).

Example:
    >>> import io
    >>> from bastion.crypto.keys import generate_private_key
    >>> key = generate_private_key()
    >>> out = io.BytesIO()
    >>> _ = build_image(out, io.BytesIO(b"hi"), image_type=ImageType.OS,
    ...     component_id="6f0b3a52-5f0e-4d55-9d38-2a3f3b1f5e01", version="1.0.0",
    ...     security_version=1, key=key)
    >>> _ = out.seek(0)
    >>> verify_image(out, [key.public_key()]).version
    '1.0.0'
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cbor2

from bastion.crypto.cose import cbor_loads_exact, decode_sign1, sign1, verify_sign1
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, PublicKey, public_key_bytes
from bastion.images.errors import (
    ImageBuildError,
    ImageFormatError,
    ImagePayloadError,
    ImageSignatureError,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "ImageHeader",
    "ImageLimits",
    "ImageType",
    "build_image",
    "inspect_image",
    "key_id",
    "measure_image",
    "measure_stream",
    "verify_image",
]

MAGIC = b"BSTNIMG\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">8sHI")
#: Bounds on header fields.
MAX_VERSION_LENGTH = 64
MAX_SECURITY_VERSION = 2**32 - 1
_DIGEST_SIZE = 32
# Matched whole and in ASCII digits: with re.match and a final "$", "1.0.0\n" passed, and
# \d took any Unicode digit ("1\u0660.0.0"), so one version had several spellings
# (fuzz/harnesses/fuzz_image.py).
# Pre-release identifiers are dot-separated and non-empty, as images/semver.py orders them: "1.0.0-." passed
# here and then failed semver_key (fuzz/harnesses/fuzz_image.py).
_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z.-]+)?"
)
_FIELDS = frozenset(
    {
        "magic",
        "format_version",
        "image_type",
        "component_id",
        "version",
        "security_version",
        "payload_size",
        "payload_digest",
        "signer",
    }
)


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

    @property
    def max_package_bytes(self) -> int:
        """The largest package these limits admit."""
        return _PREFIX.size + self.max_header_bytes + self.max_payload_bytes


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

    def to_cbor(self) -> bytes:
        """Encode the header map deterministically (RFC 8949 section 4.2.1)."""
        return cbor2.dumps(
            {
                "magic": MAGIC,
                "format_version": self.format_version,
                "image_type": self.image_type.value,
                "component_id": self.component_id,
                "version": self.version,
                "security_version": self.security_version,
                "payload_size": self.payload_size,
                "payload_digest": self.payload_digest,
                "signer": self.signer,
            },
            canonical=True,
        )


def key_id(key: PublicKey) -> bytes:
    """Return the key id of a signing key: SHA-256 of its SEC1 uncompressed encoding."""
    return hashlib.sha256(public_key_bytes(key)).digest()


def _is_uint(value: object, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def _check_identity(component_id: object, version: object) -> str | None:
    """Return what is wrong with a component id / version pair, or None."""
    if not isinstance(component_id, str) or len(component_id) != 36:
        return "component_id is not a UUID string"
    try:
        canonical = str(uuid.UUID(component_id))
    except ValueError:
        return "component_id is not a UUID string"
    if canonical != component_id:
        return "component_id is not a lowercase canonical UUID"
    if not isinstance(version, str) or len(version) > MAX_VERSION_LENGTH:
        return "version is not a short string"
    if not _SEMVER.fullmatch(version):
        return f"version {version!r} is not a semantic version"
    return None


def _header_from_map(value: object, limits: ImageLimits) -> ImageHeader:
    if not isinstance(value, dict) or set(value) != _FIELDS:
        raise ImageFormatError("image header is not a map with exactly the version 1 fields")
    fields: dict[str, Any] = value
    if fields["magic"] != MAGIC or fields["format_version"] != FORMAT_VERSION:
        raise ImageFormatError("image header magic or format version does not match")
    problem = _check_identity(fields["component_id"], fields["version"])
    if problem:
        raise ImageFormatError(f"image header: {problem}")
    try:
        image_type = ImageType(fields["image_type"])
    except ValueError as exc:
        raise ImageFormatError("image header: unknown image_type") from exc
    if not _is_uint(fields["security_version"], MAX_SECURITY_VERSION):
        raise ImageFormatError("image header: security_version is not a 32-bit uint")
    if not _is_uint(fields["payload_size"], 2**64):
        raise ImageFormatError("image header: payload_size is not a uint")
    if fields["payload_size"] > limits.max_payload_bytes:
        raise ImageFormatError(
            f"payload of {fields['payload_size']} bytes is over the {limits.max_payload_bytes}-byte limit"
        )
    for name in ("payload_digest", "signer"):
        if not isinstance(fields[name], bytes) or len(fields[name]) != _DIGEST_SIZE:
            raise ImageFormatError(f"image header: {name} is not a 32-byte digest")
    return ImageHeader(
        image_type=image_type,
        component_id=fields["component_id"],
        version=fields["version"],
        security_version=fields["security_version"],
        payload_size=fields["payload_size"],
        payload_digest=fields["payload_digest"],
        signer=fields["signer"],
    )


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _read_signed_header(stream: BinaryIO, limits: ImageLimits) -> tuple[Any, ImageHeader]:
    prefix = _read_exact(stream, _PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise ImageFormatError("truncated: shorter than the image prefix")
    magic, version, header_length = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ImageFormatError("not a Bastion image package (bad magic)")
    if version != FORMAT_VERSION:
        raise ImageFormatError(f"unsupported image format version {version}")
    if header_length == 0 or header_length > limits.max_header_bytes:
        raise ImageFormatError(f"header length {header_length} is outside 1..{limits.max_header_bytes} bytes")
    raw = _read_exact(stream, header_length)
    if len(raw) < header_length:
        raise ImageFormatError("truncated: the signed header is incomplete")
    try:
        message = decode_sign1(raw, max_size=limits.max_header_bytes)
    except CryptoError as exc:
        raise ImageFormatError(f"signed header is not a valid COSE_Sign1: {exc}") from exc
    try:
        header_map = cbor_loads_exact(message.payload)
    except CryptoError as exc:
        raise ImageFormatError("image header is not valid CBOR") from exc
    return message, _header_from_map(header_map, limits)


def inspect_image(stream: BinaryIO, *, limits: ImageLimits = ImageLimits()) -> ImageHeader:
    """Parse the header of an image package without checking its signature or payload.

    On return the stream is positioned at the first payload byte.

    Raises:
        ImageFormatError: bad magic, unsupported format version, header too
            large or malformed.
    """
    return _read_signed_header(stream, limits)[1]


def verify_image(
    stream: BinaryIO, trusted_keys: Sequence[PublicKey], *, limits: ImageLimits = ImageLimits()
) -> ImageHeader:
    """Verify an image package completely: format, signature, payload size and digest.

    The signature must be by one of ``trusted_keys``; the payload is hashed
    streamed, in bounded chunks.

    Raises:
        ImageFormatError: the package is malformed or oversized.
        ImageSignatureError: no trusted key signed it, or the signature fails.
        ImagePayloadError: the payload is shorter, longer or has another digest.
    """
    message, header = _read_signed_header(stream, limits)
    candidates = [k for k in trusted_keys if hmac.compare_digest(key_id(k), header.signer)]
    if not candidates:
        raise ImageSignatureError(f"image is signed by key {header.signer.hex()[:16]}, not a trusted key")
    try:
        verify_sign1(message, candidates[0])
    except CryptoError as exc:
        raise ImageSignatureError("image header signature does not verify") from exc
    digest = hashlib.sha256()
    remaining = header.payload_size
    while remaining:
        chunk = stream.read(min(limits.chunk_size, remaining))
        if not chunk:
            raise ImagePayloadError(
                f"truncated: payload is {header.payload_size - remaining} of {header.payload_size} bytes"
            )
        digest.update(chunk)
        remaining -= len(chunk)
    if stream.read(1):
        raise ImagePayloadError("extra data after the payload")
    if not hmac.compare_digest(digest.digest(), header.payload_digest):
        raise ImagePayloadError("payload digest does not match the signed header")
    return header


def measure_stream(stream: BinaryIO, *, limits: ImageLimits = ImageLimits()) -> bytes:
    """Return the SHA-256 of everything ``stream`` yields, streamed and bounded.

    Raises:
        ImageFormatError: the stream yields more than a package can hold.
    """
    digest = hashlib.sha256()
    total = 0
    while chunk := stream.read(limits.chunk_size):
        total += len(chunk)
        if total > limits.max_package_bytes:
            raise ImageFormatError("image is larger than any package the limits admit")
        digest.update(chunk)
    return digest.digest()


def measure_image(path: Path, *, limits: ImageLimits = ImageLimits()) -> bytes:
    """Return the measurement of an image file: SHA-256 of the whole file, streamed and bounded."""
    with path.open("rb") as stream:
        return measure_stream(stream, limits=limits)


def _hash_payload(payload: BinaryIO, limits: ImageLimits) -> tuple[int, bytes]:
    digest = hashlib.sha256()
    size = 0
    while chunk := payload.read(limits.chunk_size):
        size += len(chunk)
        if size > limits.max_payload_bytes:
            raise ImageBuildError(f"payload is over the {limits.max_payload_bytes}-byte limit")
        digest.update(chunk)
    return size, digest.digest()


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
    """Write a signed image package for ``payload`` to ``out``.

    The payload is streamed twice (hash, then copy), so it must be seekable.

    Raises:
        ImageBuildError: invalid component id, version or security version, the
            payload is over its bound, or it changed between the two passes.
    """
    problem = _check_identity(component_id, version)
    if problem:
        raise ImageBuildError(problem)
    if not _is_uint(security_version, MAX_SECURITY_VERSION):
        raise ImageBuildError("security_version must be an integer in 0..2**32-1")
    start = payload.tell()
    size, payload_digest = _hash_payload(payload, limits)
    header = ImageHeader(
        image_type=ImageType(image_type),
        component_id=component_id,
        version=version,
        security_version=security_version,
        payload_size=size,
        payload_digest=payload_digest,
        signer=key_id(key.public_key()),
    )
    signed = sign1(header.to_cbor(), key)
    if len(signed) > limits.max_header_bytes:
        raise ImageBuildError("signed header is over its size bound")
    out.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(signed)))
    out.write(signed)
    payload.seek(start)
    copied = hashlib.sha256()
    remaining = size
    while remaining and (chunk := payload.read(min(limits.chunk_size, remaining))):
        copied.update(chunk)
        out.write(chunk)
        remaining -= len(chunk)
    if remaining or not hmac.compare_digest(copied.digest(), payload_digest):
        raise ImageBuildError("payload changed while the image was being built")
    return header
