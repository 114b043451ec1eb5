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


def test_parse_token_raises_only_unauthenticated_on_any_text() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=200), st.from_regex(r"bst_[0-9a-f]{32}_[A-Za-z0-9_-]{40,46}", fullmatch=True)))
    def check(raw: str) -> None:
        try:
            token_id, digest = parse_token(raw)
        except Unauthenticated:
            return
        assert len(token_id) == 32
        assert len(digest) == 32

    check()


def test_fuzz_token_harness_seeds_replay() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "fuzz" / "harnesses" / "fuzz_token.py"
    spec = importlib.util.spec_from_file_location("fuzz_token", path)
    assert spec is not None
    assert spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    for seed in [*harness.SEEDS, b"", b"\xff\xfe", b"9999999d", b"x" * 5000]:
        harness.test_one_input(seed)
