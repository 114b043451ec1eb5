"""The shared MAC nonce (service/macnonce.py): byte-compatible with the nonces issued before it was shared."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import struct

from hypothesis import given
from hypothesis import strategies as st

from bastion.service import macnonce
from bastion.service.attestation.challenges import CHALLENGE_KEY_INFO, CHALLENGE_MAC_DOMAIN, ChallengeKey, check_nonce
from bastion.service.ownership.challenge import CLAIM_KEY_INFO, CLAIM_MAC_DOMAIN, ClaimKey, check_claim_nonce

MASTER = bytes(range(32))
DEVICE = "ab" * 32
NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


def _old_layout(key: bytes, message_head: bytes, random: bytes, expiry: int) -> bytes:
    """A nonce exactly as the two copies built it before (an upgraded worker accepts an old worker's nonce)."""
    packed = struct.pack(">I", expiry)
    return random + packed + hmac.new(key, message_head + random + packed, hashlib.sha256).digest()[:12]


def test_an_attestation_nonce_of_the_old_code_still_verifies() -> None:
    key = macnonce.derive_key(MASTER, CHALLENGE_KEY_INFO)
    expiry = int((NOW + dt.timedelta(seconds=60)).timestamp())
    nonce = _old_layout(key, CHALLENGE_MAC_DOMAIN + DEVICE.encode(), b"\x07" * 16, expiry)
    assert check_nonce(ChallengeKey.from_master_key(MASTER), nonce, DEVICE, now=NOW).timestamp() == expiry


def test_a_claim_nonce_of_the_old_code_still_verifies() -> None:
    key = macnonce.derive_key(MASTER, CLAIM_KEY_INFO)
    expiry = int((NOW + dt.timedelta(minutes=5)).timestamp())
    tenant = "t-1"
    head = CLAIM_MAC_DOMAIN + bytes([len(tenant)]) + tenant.encode() + DEVICE.encode()
    nonce = _old_layout(key, head, b"\x09" * 16, expiry)
    expires = check_claim_nonce(ClaimKey.from_master_key(MASTER), nonce, tenant, DEVICE, now=NOW)
    assert expires.timestamp() == expiry


def test_the_two_kinds_have_different_keys() -> None:
    assert macnonce.derive_key(MASTER, CHALLENGE_KEY_INFO) != macnonce.derive_key(MASTER, CLAIM_KEY_INFO)


@given(st.binary(max_size=64))
def test_any_other_bytes_are_not_a_nonce(data: bytes) -> None:
    key = macnonce.derive_key(MASTER, b"test v1")
    assert macnonce.read_nonce(key, b"d", b"x", data) is None


def test_expiry_is_rounded_up_to_a_whole_second() -> None:
    assert macnonce.expiry_after(NOW, dt.timedelta(seconds=60)) == int(NOW.timestamp()) + 60
    later = NOW + dt.timedelta(microseconds=1)
    assert macnonce.expiry_after(later, dt.timedelta(seconds=60)) == int(NOW.timestamp()) + 61
