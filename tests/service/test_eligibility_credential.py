"""Download credentials (pure): one HMAC binds device, group, tenant and expiry; refusals are bounded records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.service.eligibility import CREDENTIAL_SCHEME, CredentialError, DownloadKey, mint_credential
from bastion.service.eligibility.credential import MAX_CREDENTIAL_CHARS, credential_from_header, verify_credential
from bastion.service.eligibility.refusals import RefusalLog

KEY = DownloadKey.from_master_key(bytes(32))
DEVICE, GROUP, TENANT = "ab" * 32, "3f2c1e0a-0000-4000-8000-000000000001", "7e57e57e-0000-4000-8000-000000000002"


def _token(expires: int = 1_000, group: str = GROUP) -> str:
    return mint_credential(KEY, DEVICE, group, TENANT, expires=expires)


def _reason(token: str, *, group: str = GROUP, now: float = 999, key: DownloadKey = KEY) -> str:
    with pytest.raises(CredentialError) as info:
        verify_credential(key, token, group_id=group, now=now)
    return info.value.reason


def test_a_fresh_credential_opens_its_group() -> None:
    grant = verify_credential(KEY, _token(), group_id=GROUP, now=999)
    assert (grant.device_id, grant.group_id, grant.tenant_id, grant.expires) == (DEVICE, GROUP, TENANT, 1_000)
    assert len(_token()) < MAX_CREDENTIAL_CHARS


def test_expired_wrong_group_and_foreign_key() -> None:
    assert _reason(_token(), now=1_000) == "expired"
    assert _reason(_token(), group="3f2c1e0a-0000-4000-8000-000000000009") == "wrong_group"
    assert _reason(_token(), key=DownloadKey.from_master_key(b"\1" * 32)) == "bad_mac"  # another service


def test_every_field_is_bound_by_the_mac() -> None:
    parts = _token().split(".")
    for index, value in ((1, "cd" * 32), (2, "other-group"), (3, "other-tenant"), (4, "99999999")):
        forged = parts.copy()
        forged[index] = value
        assert _reason(".".join(forged), group=forged[2]) == "bad_mac", index


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v2." + _token()[3:], _token() + ".x", _token().replace(".", ":"), "v1.a.b.c.-1.mac", "v1.....x"],
)
def test_malformed_credentials(token: str) -> None:
    assert _reason(token) in {"malformed", "bad_mac"}


@given(st.binary(max_size=600))
def test_any_header_value_is_refused_cleanly(value: bytes) -> None:
    with pytest.raises(CredentialError) as info:  # no forgery: random bytes never carry a valid MAC
        verify_credential(KEY, credential_from_header(b"Bastion-Download " + value), group_id=GROUP, now=0)
    assert info.value.reason in {"missing", "malformed", "bad_mac"}


def test_header_parsing() -> None:
    token = _token()
    assert credential_from_header(f"{CREDENTIAL_SCHEME} {token}".encode()) == token
    assert credential_from_header(f"bastion-download {token}".encode()) == token
    for value in (None, b"Bearer abc", b""):
        with pytest.raises(CredentialError) as info:
            credential_from_header(value)
        assert info.value.reason == "missing"
    with pytest.raises(CredentialError) as info:
        credential_from_header(b"Bastion-Download " + b"a" * MAX_CREDENTIAL_CHARS)
    assert info.value.reason == "malformed"


def test_minting_refuses_fields_that_would_break_the_format() -> None:
    with pytest.raises(ValueError, match="credential fields"):
        mint_credential(KEY, "a.b", GROUP, TENANT, expires=1)


def test_the_key_never_shows() -> None:
    assert "secret" in repr(KEY)


def test_refusal_log_records_once_per_window_and_counts_the_rest() -> None:
    log = RefusalLog(window_s=60, max_keys=2)
    assert log.admit(("a",), now=0) == 0
    assert [log.admit(("a",), now=t) for t in (1, 2, 3)] == [None, None, None]
    assert log.admit(("a",), now=60) == 3
    assert log.admit(("b",), now=61) == 0
    assert log.admit(("c",), now=61) == 0  # "a" is forgotten (bound), so it records again
    assert log.admit(("a",), now=62) == 0
