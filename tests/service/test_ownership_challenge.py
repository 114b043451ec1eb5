"""Claim challenges (ownership/challenge.py): bound to tenant and device, expiring, never an attestation nonce."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.service.attestation.challenges import ChallengeKey, issue_challenge
from bastion.service.errors import ClaimRefused
from bastion.service.ownership.challenge import (
    CLAIM_CHALLENGE_TTL,
    CLAIM_NONCE_BYTES,
    ClaimKey,
    check_claim_nonce,
    issue_claim_challenge,
)

NOW = dt.datetime(2026, 12, 2, 12, 0, 0, 500_000, tzinfo=dt.UTC)
MASTER = bytes(range(32))
KEY = ClaimKey.from_master_key(MASTER)
TENANT, OTHER_TENANT = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
DEVICE, OTHER_DEVICE = "ab" * 32, "cd" * 32


def _code(exc: pytest.ExceptionInfo[ClaimRefused]) -> str:
    return exc.value.code


def test_issue_and_check() -> None:
    issued = issue_claim_challenge(KEY, TENANT, DEVICE, now=NOW)
    assert len(issued.nonce) == CLAIM_NONCE_BYTES
    assert issued.expires_at >= NOW + CLAIM_CHALLENGE_TTL
    assert issued.expires_at < NOW + CLAIM_CHALLENGE_TTL + dt.timedelta(seconds=1)
    assert check_claim_nonce(KEY, issued.nonce, TENANT, DEVICE, now=NOW) == issued.expires_at
    assert issue_claim_challenge(KEY, TENANT, DEVICE, now=NOW).nonce != issued.nonce
    assert "secret" in repr(KEY)
    assert MASTER.hex() not in repr(KEY)


@pytest.mark.parametrize(
    ("tenant", "device", "key"),
    [
        (OTHER_TENANT, DEVICE, KEY),  # replay across tenants
        (TENANT, OTHER_DEVICE, KEY),  # another device's challenge
        (TENANT, DEVICE, ClaimKey.from_master_key(bytes(32))),  # another service
    ],
)
def test_binding(tenant: str, device: str, key: ClaimKey) -> None:
    issued = issue_claim_challenge(KEY, TENANT, DEVICE, now=NOW)
    with pytest.raises(ClaimRefused) as refused:
        check_claim_nonce(key, issued.nonce, tenant, device, now=NOW)
    assert _code(refused) == "claim_challenge_invalid"


def test_expiry() -> None:
    issued = issue_claim_challenge(KEY, TENANT, DEVICE, now=NOW)
    with pytest.raises(ClaimRefused) as refused:
        check_claim_nonce(KEY, issued.nonce, TENANT, DEVICE, now=issued.expires_at)
    assert _code(refused) == "claim_challenge_expired"
    assert "bastion device claim --dir DEV" in refused.value.detail


def test_an_attestation_nonce_is_not_a_claim_nonce() -> None:
    attestation = issue_challenge(ChallengeKey.from_master_key(MASTER), DEVICE, now=NOW)
    with pytest.raises(ClaimRefused) as refused:
        check_claim_nonce(KEY, attestation.nonce, TENANT, DEVICE, now=NOW)
    assert _code(refused) == "claim_challenge_invalid"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_refused(nonce: bytes) -> None:
    with pytest.raises(ClaimRefused):
        check_claim_nonce(KEY, nonce, TENANT, DEVICE, now=NOW)
