"""The image package format: round trip, tampering, bounds and parser robustness."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.errors import ImageError, ImageFormatError, ImagePayloadError, ImageSignatureError
from bastion.images.package import (
    MAGIC,
    ImageLimits,
    ImageType,
    build_image,
    inspect_image,
    key_id,
    measure_image,
    verify_image,
)

COMPONENT = "6f0b3a52-5f0e-4d55-9d38-2a3f3b1f5e01"
PAYLOAD = b"payload bytes " * 100


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key()


def _build(key: PrivateKey, payload: bytes = PAYLOAD, **kwargs: object) -> bytes:
    out = io.BytesIO()
    args: dict[str, object] = {
        "image_type": ImageType.OS,
        "component_id": COMPONENT,
        "version": "1.2.3",
        "security_version": 4,
        "key": key,
    }
    args.update(kwargs)
    build_image(out, io.BytesIO(payload), **args)  # type: ignore[arg-type]
    return out.getvalue()


def test_round_trip(key: PrivateKey) -> None:
    image = _build(key)
    header = verify_image(io.BytesIO(image), [generate_private_key().public_key(), key.public_key()])
    assert header.image_type is ImageType.OS
    assert (header.component_id, header.version, header.security_version) == (COMPONENT, "1.2.3", 4)
    assert header.payload_size == len(PAYLOAD)
    assert header.signer == key_id(key.public_key())
    stream = io.BytesIO(image)
    assert inspect_image(stream) == header
    assert stream.read() == PAYLOAD  # inspect leaves the stream at the payload


def test_empty_payload_round_trip(key: PrivateKey) -> None:
    assert verify_image(io.BytesIO(_build(key, b"")), [key.public_key()]).payload_size == 0


def test_every_byte_is_covered(key: PrivateKey) -> None:
    image = _build(key, b"x" * 40)
    for index in range(len(image)):
        tampered = bytearray(image)
        tampered[index] ^= 0x01
        with pytest.raises(ImageError):
            verify_image(io.BytesIO(bytes(tampered)), [key.public_key()])


def test_payload_byte_changed_is_a_payload_error(key: PrivateKey) -> None:
    image = bytearray(_build(key))
    image[-10] ^= 0xFF
    with pytest.raises(ImagePayloadError, match="digest"):
        verify_image(io.BytesIO(bytes(image)), [key.public_key()])


def test_header_byte_changed_is_a_signature_error(key: PrivateKey) -> None:
    image = _build(key)
    # The version string sits inside the signed CBOR header.
    index = image.index(b"1.2.3")
    tampered = image[:index] + b"1.2.9" + image[index + 5 :]
    with pytest.raises(ImageSignatureError):
        verify_image(io.BytesIO(tampered), [key.public_key()])


def test_truncated(key: PrivateKey) -> None:
    image = _build(key)
    with pytest.raises(ImagePayloadError, match="truncated"):
        verify_image(io.BytesIO(image[:-1]), [key.public_key()])
    with pytest.raises(ImageFormatError, match="truncated"):
        verify_image(io.BytesIO(image[:20]), [key.public_key()])
    with pytest.raises(ImageFormatError):
        inspect_image(io.BytesIO(b""))


class _Endless(io.RawIOBase):
    """A stream that never ends, counting what it hands out."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        size = len(buffer)
        chunk = (self.prefix[self.served : self.served + size]).ljust(size, b"\x00")
        buffer[:size] = chunk
        self.served += size
        return size


def test_trailing_and_endless_data_refused(key: PrivateKey) -> None:
    image = _build(key)
    with pytest.raises(ImagePayloadError, match="extra data"):
        verify_image(io.BytesIO(image + b"\x00"), [key.public_key()])
    endless = _Endless(image)
    with pytest.raises(ImagePayloadError, match="extra data"):
        verify_image(endless, [key.public_key()])  # type: ignore[arg-type]
    assert endless.served <= len(image) + ImageLimits().chunk_size


def test_wrong_key(key: PrivateKey) -> None:
    other = generate_private_key()
    with pytest.raises(ImageSignatureError, match="not a trusted key"):
        verify_image(io.BytesIO(_build(key)), [other.public_key()])
    with pytest.raises(ImageSignatureError):
        verify_image(io.BytesIO(_build(key)), [])


def test_signer_id_forged_to_a_trusted_key(key: PrivateKey) -> None:
    """An attacker who re-signs with their key but claims the trusted key id fails the signature."""
    attacker = generate_private_key()
    image = _build(attacker)
    tampered = image.replace(key_id(attacker.public_key()), key_id(key.public_key()))
    with pytest.raises(ImageSignatureError, match="does not verify"):
        verify_image(io.BytesIO(tampered), [key.public_key()])


def test_oversized_header_refused_before_reading(key: PrivateKey) -> None:
    limits = ImageLimits()
    prefix = MAGIC + struct.pack(">HI", 1, limits.max_header_bytes + 1)
    with pytest.raises(ImageFormatError, match="header length"):
        inspect_image(io.BytesIO(prefix + b"\x00" * 10))


def test_oversized_payload(key: PrivateKey) -> None:
    image = _build(key, b"y" * 1000)
    with pytest.raises(ImageFormatError, match="over the 999-byte limit"):
        verify_image(io.BytesIO(image), [key.public_key()], limits=ImageLimits(max_payload_bytes=999))
    with pytest.raises(ImageError, match="over the 10-byte limit"):
        _build(key, b"y" * 11, limits=ImageLimits(max_payload_bytes=10))


def test_bad_magic_and_version(key: PrivateKey) -> None:
    image = _build(key)
    with pytest.raises(ImageFormatError, match="bad magic"):
        inspect_image(io.BytesIO(b"NOTANIMG" + image[8:]))
    with pytest.raises(ImageFormatError, match="format version 2"):
        inspect_image(io.BytesIO(image[:8] + b"\x00\x02" + image[10:]))


@pytest.mark.parametrize(
    ("field", "value"),
    [("component_id", "not-a-uuid"), ("version", "v1"), ("security_version", -1), ("version", "1." * 40 + "0")],
)
def test_build_rejects_bad_identity(key: PrivateKey, field: str, value: object) -> None:
    with pytest.raises(ImageError):
        _build(key, **{field: value})


def test_measure_image(tmp_path: Path, key: PrivateKey) -> None:
    import hashlib

    image = _build(key)
    path = tmp_path / "os.img"
    path.write_bytes(image)
    assert measure_image(path) == hashlib.sha256(image).digest()
    with pytest.raises(ImageFormatError):
        measure_image(path, limits=ImageLimits(max_header_bytes=1, max_payload_bytes=10, chunk_size=64))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_inspect_random_bytes_raises_only_format_error(data: bytes) -> None:
    with contextlib.suppress(ImageFormatError):
        inspect_image(io.BytesIO(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_inspect_random_header_after_valid_prefix(data: bytes) -> None:
    stream = io.BytesIO(MAGIC + struct.pack(">HI", 1, len(data)) + data)
    with contextlib.suppress(ImageFormatError):
        inspect_image(stream)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=4))
def test_mutated_valid_image_raises_only_image_errors(offset: int, noise: bytes) -> None:
    key = _MODULE_KEY
    image = bytearray(_VALID)
    index = offset % len(image)
    image[index : index + len(noise)] = noise
    with contextlib.suppress(ImageError):
        verify_image(io.BytesIO(bytes(image)), [key.public_key()])


_MODULE_KEY = generate_private_key()
_VALID = _build(_MODULE_KEY, b"z" * 64)
