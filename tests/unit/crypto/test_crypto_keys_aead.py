"""P-256 key encodings and AES-GCM sealing."""

from __future__ import annotations

import hashlib

import pytest

from bastion.crypto.aead import MASTER_KEY_SIZE, open_sealed, seal
from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.keys import (
    MAX_PEM_BYTES,
    device_id_from_public_key,
    generate_private_key,
    load_private_key_pem,
    load_public_key_bytes,
    load_public_key_pem,
    private_key_pem,
    public_key_bytes,
    public_key_pem,
    ueid_from_public_key,
)

#: SEC 2 / FIPS 186 P-256 base point G, an outside value for the point decoder.
P256_G = bytes.fromhex(
    "04"
    "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
)


def test_public_key_round_trips_and_base_point_loads() -> None:
    key = generate_private_key().public_key()
    assert load_public_key_bytes(public_key_bytes(key)) == key
    assert public_key_bytes(load_public_key_bytes(P256_G)) == P256_G


@pytest.mark.parametrize("data", [b"", P256_G[:-1], b"\x02" + P256_G[1:], b"\x04" + bytes(64)])
def test_bad_points_rejected(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        load_public_key_bytes(data)


def test_device_id_and_ueid() -> None:
    key = load_public_key_bytes(P256_G)
    assert device_id_from_public_key(key) == hashlib.sha256(P256_G).hexdigest()
    assert ueid_from_public_key(key) == b"\x01" + hashlib.sha256(P256_G).digest()


def test_pem_round_trips_and_bounds() -> None:
    key = generate_private_key()
    assert load_private_key_pem(private_key_pem(key)).private_numbers() == key.private_numbers()
    assert load_public_key_pem(public_key_pem(key.public_key())) == key.public_key()
    with pytest.raises(MalformedInput):
        load_private_key_pem(b"x" * (MAX_PEM_BYTES + 1))
    with pytest.raises(MalformedInput):
        load_public_key_pem(b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")


def test_seal_round_trip_and_binding() -> None:
    key = bytes(range(MASTER_KEY_SIZE))
    blob = seal(key, b"tenant CA key", aad=b"tenant:1")
    assert open_sealed(key, blob, aad=b"tenant:1") == b"tenant CA key"
    with pytest.raises(InvalidSignature):
        open_sealed(key, blob, aad=b"tenant:2")
    with pytest.raises(InvalidSignature):
        open_sealed(bytes(MASTER_KEY_SIZE), blob, aad=b"tenant:1")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(InvalidSignature):
        open_sealed(key, tampered, aad=b"tenant:1")
    with pytest.raises(MalformedInput):
        open_sealed(key, b"XXXX" + blob[4:], aad=b"tenant:1")
    with pytest.raises(MalformedInput):
        seal(bytes(16), b"x", aad=b"")
