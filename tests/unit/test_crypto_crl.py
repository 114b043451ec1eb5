"""bastion.crypto.crl: RFC 5280 CRLs built, bounded on load, verified; checked against OpenSSL too."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto import crl as crlmod
from bastion.crypto.certs import certificate_pem, make_ca
from bastion.crypto.crl import (
    MAX_CRLS_IN_BUNDLE,
    RevokedEntry,
    build_crl,
    crl_der,
    crl_pem,
    load_crl,
    load_crl_bundle,
    verify_crl,
)
from bastion.crypto.errors import CertificateError, CryptoError, InvalidSignature, MalformedInput
from bastion.crypto.keys import generate_private_key

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(hours=24)
KEY = generate_private_key()
CA = make_ca("Tenant CA acme", KEY, now=NOW, organization="t-acme")


def signed(entries: list[RevokedEntry] | None = None, *, number: int = 1) -> x509.CertificateRevocationList:
    return build_crl(KEY, CA, entries or [], number=number, this_update=NOW, next_update=NOW + DAY)


def test_round_trip_carries_number_aki_reasons_and_bounded_next_update() -> None:
    crl = signed([RevokedEntry(7, NOW, "privilege_withdrawn"), RevokedEntry(2**158, NOW, "key_compromise")], number=9)
    for data in (crl_der(crl), crl_pem(crl)):
        loaded = load_crl(data)
        verify_crl(loaded, CA, now=NOW)
        assert loaded.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 9
        aki = loaded.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = CA.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        assert loaded.next_update_utc == NOW + DAY
        entry = loaded.get_revoked_certificate_by_serial_number(2**158)
        assert entry is not None
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise


def test_openssl_accepts_the_crl_signature(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(certificate_pem(CA))
    (tmp_path / "crl.pem").write_bytes(crl_pem(signed([RevokedEntry(42, NOW)])))
    out = subprocess.run(
        ["openssl", "crl", "-in", str(tmp_path / "crl.pem"), "-CAfile", str(tmp_path / "ca.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "verify OK" in out.stderr + out.stdout
    assert "Serial Number: 2A" in out.stdout
    assert "CRL Number" in out.stdout


def test_build_refuses_bad_parameters() -> None:
    with pytest.raises(MalformedInput, match="positive"):
        signed(number=0)
    with pytest.raises(MalformedInput, match="nextUpdate"):
        build_crl(KEY, CA, [], number=1, this_update=NOW, next_update=NOW)
    with pytest.raises(MalformedInput, match="unknown revocation reason"):
        signed([RevokedEntry(1, NOW, "bored")])


def test_build_and_load_bound_the_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    big = signed([RevokedEntry(i, NOW) for i in range(1, 6)])
    monkeypatch.setattr(crlmod, "MAX_CRL_ENTRIES", 4)
    with pytest.raises(MalformedInput, match="at most 4"):
        signed([RevokedEntry(i, NOW) for i in range(1, 6)])
    with pytest.raises(MalformedInput, match="at most 4"):
        load_crl(crl_der(big))


def test_verify_fails_closed() -> None:
    crl = signed()
    other_key = generate_private_key()
    other = make_ca("Tenant CA acme", other_key, now=NOW, organization="t-acme")  # same name, other key
    with pytest.raises(InvalidSignature):
        verify_crl(crl, other, now=NOW)
    with pytest.raises(CertificateError) as info:
        verify_crl(crl, make_ca("Someone else", other_key, now=NOW), now=NOW)
    assert info.value.reason == "issuer_mismatch"
    with pytest.raises(CertificateError) as info:
        verify_crl(crl, CA, now=NOW + DAY)
    assert info.value.reason == "expired"
    with pytest.raises(CertificateError) as info:
        verify_crl(crl, CA, now=NOW - dt.timedelta(seconds=1))
    assert info.value.reason == "not_yet_valid"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30\x03\x02\x01\x01",
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        b"\x00" * 100,
        b"x" * (crlmod.MAX_CRL_BYTES + 1),
    ],
)
def test_load_refuses_garbage_with_malformed_input(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        load_crl(data)


def test_bundle_loads_each_crl_and_is_bounded() -> None:
    one = crl_pem(signed(number=1))
    two = crl_pem(signed([RevokedEntry(5, NOW)], number=2))
    assert [len(list(c)) for c in load_crl_bundle(one + two)] == [0, 1]
    with pytest.raises(MalformedInput, match="no PEM CRL"):
        load_crl_bundle(b"hello")
    with pytest.raises(MalformedInput, match="no END line"):
        load_crl_bundle(one + b"-----BEGIN X509 CRL-----\nAAAA")
    with pytest.raises(MalformedInput, match=f"at most {MAX_CRLS_IN_BUNDLE}"):
        load_crl_bundle(one * (MAX_CRLS_IN_BUNDLE + 1))


ASSETS = Path(__file__).parent / "assets" / "crl"


def test_regression_unknown_crl_version_is_malformed_input() -> None:
    """Found by fuzz/harnesses/fuzz_crl.py: cryptography raised x509.InvalidVersion (not a ValueError)."""
    data = (ASSETS / "invalid-version.pem").read_bytes()
    with pytest.raises(MalformedInput, match="unknown version"):
        load_crl(data)
    with pytest.raises(MalformedInput, match="unknown version"):
        load_crl_bundle(data)


def test_regression_issuer_attribute_of_the_wrong_type_is_malformed_input() -> None:
    """Found by fuzz/harnesses/fuzz_crl.py: cryptography raised TypeError building the issuer Name."""
    with pytest.raises(MalformedInput, match="not a well-formed"):
        load_crl((ASSETS / "bitstring-name.der").read_bytes())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_load_raises_only_malformed_input(data: bytes) -> None:
    for loader in (load_crl, load_crl_bundle):
        with contextlib.suppress(MalformedInput):
            loader(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=8))
def test_damaged_crls_raise_only_crypto_errors(where: int, junk: bytes) -> None:
    der = bytearray(crl_der(signed([RevokedEntry(3, NOW, "superseded")])))
    where %= len(der)
    der[where : where + len(junk)] = junk
    with contextlib.suppress(CryptoError):
        verify_crl(load_crl(bytes(der)), CA, now=NOW)
