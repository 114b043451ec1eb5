"""DICE derivations, checked against an independent HKDF (RFC 5869) and open-dice's salt."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bastion.crypto.dice import ASYM_SALT, CDI_SIZE, derive_cdi, derive_key_pair
from bastion.crypto.errors import MalformedInput

#: kAsymSalt as written in google/open-dice src/dice.c (transcribed from the C array).
OPEN_DICE_K_ASYM_SALT = bytes(
    [
        0x63, 0xB6, 0xA0, 0x4D, 0x2C, 0x07, 0x7F, 0xC1, 0x0F, 0x63, 0x9F,
        0x21, 0xDA, 0x79, 0x38, 0x44, 0x35, 0x6C, 0xC2, 0xB0, 0xB4, 0x41,
        0xB3, 0xA7, 0x71, 0x24, 0x03, 0x5C, 0x03, 0xF8, 0xE1, 0xBE, 0x60,
        0x35, 0xD3, 0x1F, 0x28, 0x28, 0x21, 0xA7, 0x45, 0x0A, 0x02, 0x22,
        0x2A, 0xB1, 0xB3, 0xCF, 0xF1, 0x67, 0x9B, 0x05, 0xAB, 0x1C, 0xA5,
        0xD1, 0xAF, 0xFB, 0x78, 0x9C, 0xCD, 0x2B, 0x0B, 0x3B,
    ]
)  # fmt: skip
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return _hkdf_expand(_hkdf_extract(salt, ikm), info, length)


def test_reference_hkdf_matches_rfc5869_test_case_1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = _hkdf(ikm, salt, info, 42)
    assert okm == bytes.fromhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


def test_asym_salt_is_open_dice_k_asym_salt() -> None:
    assert ASYM_SALT == OPEN_DICE_K_ASYM_SALT
    assert len(ASYM_SALT) == 64


def test_derive_cdi_is_hkdf_with_cdi_as_ikm_and_measurement_as_salt() -> None:
    cdi = bytes(range(32))
    measurement = hashlib.sha256(b"bootloader image").digest()
    assert derive_cdi(cdi, measurement) == _hkdf(cdi, measurement, b"CDI_Attest", CDI_SIZE)


def test_derive_key_pair_follows_the_documented_construction() -> None:
    cdi = hashlib.sha256(b"some cdi").digest()
    seed = _hkdf(cdi, ASYM_SALT, b"Key Pair", 32)
    scalar = int.from_bytes(_hkdf_expand(seed, b"Bastion P-256 key" + (0).to_bytes(4, "big"), 32), "big")
    assert 1 <= scalar < P256_ORDER
    assert derive_key_pair(cdi).private_numbers().private_value == scalar


def test_derivations_are_deterministic_and_input_sensitive() -> None:
    uds = bytes(32)
    cdi_a = derive_cdi(uds, hashlib.sha256(b"os 1.0.0").digest())
    cdi_b = derive_cdi(uds, hashlib.sha256(b"os 1.0.1").digest())
    assert cdi_a != cdi_b
    assert derive_cdi(uds, hashlib.sha256(b"os 1.0.0").digest()) == cdi_a
    key_a = derive_key_pair(cdi_a).private_numbers().private_value
    assert key_a == derive_key_pair(cdi_a).private_numbers().private_value
    assert key_a != derive_key_pair(cdi_b).private_numbers().private_value


@pytest.mark.parametrize(("cdi", "measurement"), [(bytes(31), bytes(32)), (bytes(33), bytes(32)), (bytes(32), b"")])
def test_derive_cdi_rejects_bad_sizes(cdi: bytes, measurement: bytes) -> None:
    with pytest.raises(MalformedInput):
        derive_cdi(cdi, measurement)


def test_derive_key_pair_rejects_bad_size() -> None:
    with pytest.raises(MalformedInput):
        derive_key_pair(bytes(16))
