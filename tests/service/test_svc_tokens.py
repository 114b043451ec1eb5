"""Operator token format, hashing and role order (pure)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bastion.service.auth.tokens import check_secret, new_token, parse_token, role_allows
from bastion.service.errors import Unauthenticated


def test_token_format_and_stored_hash() -> None:
    minted = new_token()
    prefix, token_id, secret = minted.token[:4], minted.token[4:36], minted.token[37:]
    assert prefix == "bst_"
    assert token_id == minted.token_id
    assert len(token_id) == 32
    raw = base64.urlsafe_b64decode(secret + "=")
    assert len(raw) == 32
    assert minted.secret_hash == hashlib.sha256(raw).digest()
    assert minted.token not in repr(minted)
    assert parse_token(minted.token) == (minted.token_id, minted.secret_hash)


def test_tokens_are_unique() -> None:
    assert len({new_token().token for _ in range(100)}) == 100


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "bst_",
        "xyz_" + "0" * 32 + "_" + "A" * 43,
        "bst_" + "0" * 31 + "_" + "A" * 44,
        "bst_" + "G" * 32 + "_" + "A" * 43,
        "bst_" + "0" * 32 + "-" + "A" * 43,
        "bst_" + "0" * 32 + "_" + "A" * 42,
        "bst_" + "0" * 32 + "_" + "A" * 43 + "=",
        "bst_" + "0" * 32 + "_" + "A" * 1000,
    ],
)
def test_malformed_tokens_are_rejected(raw: str) -> None:
    with pytest.raises(Unauthenticated):
        parse_token(raw)


def test_check_secret_raises_on_mismatch() -> None:
    a, b = new_token(), new_token()
    check_secret(a.secret_hash, a.secret_hash)
    with pytest.raises(Unauthenticated):
        check_secret(a.secret_hash, b.secret_hash)


def test_role_order() -> None:
    assert role_allows("admin", "contributor")
    assert role_allows("contributor", "reader")
    assert role_allows("reader", "reader")
    assert not role_allows("reader", "contributor")
    assert not role_allows("contributor", "admin")
    assert not role_allows("superuser", "reader")
