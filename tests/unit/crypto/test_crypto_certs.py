"""X.509 DICE profile: DiceTcbInfo DER, issuance, chain verification failures, and openssl."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto.certs import (
    ALIAS_NOT_AFTER,
    DEVICE_CERT_LIFETIME,
    MAX_CERT_BYTES,
    MAX_TCB_INFO_BYTES,
    OID_SHA256,
    OID_TCG_DICE_TCB_INFO,
    Fwid,
    TcbInfo,
    certificate_der,
    certificate_fingerprint,
    certificate_pem,
    decode_tcb_info,
    encode_tcb_info,
    issue_alias_cert,
    issue_device_cert,
    issue_device_id_cert,
    load_certificate_der,
    load_certificate_pem,
    make_ca,
    tcb_info_from_cert,
    verify_chain,
)
from bastion.crypto.errors import CertificateError, MalformedInput
from bastion.crypto.keys import PrivateKey, device_id_from_public_key, generate_private_key

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TCB = TcbInfo(
    vendor="Bastion",
    model="emulated-chip",
    version="1.0.0",
    svn=2,
    layer=1,
    fwids=(Fwid(OID_SHA256, b"\xa1" * 32), Fwid(OID_SHA256, b"\xb2" * 32)),
)

# --- DiceTcbInfo ----------------------------------------------------------------------

#: Hand-assembled DER of TcbInfo(version="1.0.0", svn=1, fwids=[sha256: 0xaa * 32]):
#: SEQUENCE { [2] "1.0.0", [3] 1, [6] { SEQUENCE { OID sha256, OCTET STRING } } }
KNOWN_TCB_DER = bytes.fromhex("303b8205" + "312e302e30830101a62f302d06096086480165030402010420" + "aa" * 32)


def test_tcb_info_known_der_bytes() -> None:
    info = TcbInfo(version="1.0.0", svn=1, fwids=(Fwid(OID_SHA256, b"\xaa" * 32),))
    assert encode_tcb_info(info) == KNOWN_TCB_DER
    assert decode_tcb_info(KNOWN_TCB_DER) == info


def test_tcb_info_round_trip_all_fields() -> None:
    assert decode_tcb_info(encode_tcb_info(TCB)) == TCB
    assert decode_tcb_info(encode_tcb_info(TcbInfo())) == TcbInfo()


def test_tcb_info_accepts_standard_fields_bastion_does_not_use() -> None:
    # index [5] = 7, flags [7] BIT STRING, vendorInfo [8], type [9] after the fwids.
    der = bytes.fromhex("300f8501078702070088030102038901ff")
    assert decode_tcb_info(der) == TcbInfo()


@pytest.mark.parametrize(
    ("der", "why"),
    [
        (b"", "empty"),
        (KNOWN_TCB_DER + b"\x00", "trailing byte"),
        (KNOWN_TCB_DER[:-1], "truncated"),
        (bytes.fromhex("30808301010000"), "BER indefinite length"),
        (bytes.fromhex("300483020001"), "non-minimal INTEGER"),
        (bytes.fromhex("30038301ff"), "negative svn"),
        (bytes.fromhex("3002a600"), "empty FWIDLIST (SIZE 1..MAX)"),
        (bytes.fromhex("30030c0161"), "untagged UTF8String"),
        (bytes.fromhex("3006830101820131"), "fields out of order"),
        (bytes.fromhex("3006830101830102"), "field repeated"),
        (bytes.fromhex("3003820180"), "invalid UTF-8"),
        (bytes.fromhex("3100"), "SET instead of SEQUENCE"),
        (b"\x30\x82" + (MAX_TCB_INFO_BYTES).to_bytes(2, "big") + bytes(MAX_TCB_INFO_BYTES), "too large"),
    ],
)
def test_tcb_info_strict_decode(der: bytes, why: str) -> None:
    with pytest.raises(MalformedInput):
        decode_tcb_info(der)


def test_tcb_info_bounds_checked_on_encode() -> None:
    with pytest.raises(MalformedInput):
        encode_tcb_info(TcbInfo(fwids=tuple(Fwid(OID_SHA256, bytes(32)) for _ in range(17))))
    with pytest.raises(MalformedInput):
        encode_tcb_info(TcbInfo(svn=-1))
    with pytest.raises(MalformedInput):
        encode_tcb_info(TcbInfo(fwids=(Fwid("not an oid", bytes(32)),)))


# --- a PKI for the tests --------------------------------------------------------------


class Pki:
    def __init__(self, vendor_name: str = "Bastion Test Vendor CA") -> None:
        self.vendor_key = generate_private_key()
        self.vendor = make_ca(vendor_name, self.vendor_key, now=NOW, organization="Vendor")
        self.device_key = generate_private_key()
        self.device_id = issue_device_id_cert(self.vendor_key, self.vendor, self.device_key.public_key(), now=NOW)
        self.alias_key = generate_private_key()
        self.alias = issue_alias_cert(self.device_key, self.device_id, self.alias_key.public_key(), TCB, now=NOW)
        self.tenant_key = generate_private_key()
        self.tenant = make_ca("Tenant CA", self.tenant_key, now=NOW, organization="tenant-1")
        self.leaf_key = generate_private_key()
        self.device_cert = issue_device_cert(
            self.tenant_key, self.tenant, self.leaf_key.public_key(), tenant_id="tenant-1", device_id="dev-1", now=NOW
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def test_dice_chain_verifies_to_the_vendor(pki: Pki) -> None:
    assert verify_chain([pki.alias, pki.device_id], [pki.tenant, pki.vendor], now=NOW) == pki.vendor


def test_chain_may_include_the_trust_anchor(pki: Pki) -> None:
    assert verify_chain([pki.alias, pki.device_id, pki.vendor], [pki.vendor], now=NOW) == pki.vendor


def test_device_id_cert_profile(pki: Pki) -> None:
    cert = pki.device_id
    device_id = device_id_from_public_key(pki.device_key.public_key())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device_id
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = pki.vendor.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_alias_cert_profile_and_tcb_info(pki: Pki) -> None:
    cert = pki.alias
    assert tcb_info_from_cert(cert) == TCB
    ext = cert.extensions.get_extension_for_oid(OID_TCG_DICE_TCB_INFO)
    assert not ext.critical
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.key_cert_sign
    assert cert.not_valid_after_utc == ALIAS_NOT_AFTER
    assert cert.issuer == pki.device_id.subject


def test_alias_cert_is_deterministic(pki: Pki) -> None:
    again = issue_alias_cert(
        pki.device_key, pki.device_id, pki.alias_key.public_key(), TCB, now=NOW + dt.timedelta(days=400)
    )
    assert certificate_der(again) == certificate_der(pki.alias)
    other_fw = issue_alias_cert(
        pki.device_key, pki.device_id, pki.alias_key.public_key(), TcbInfo(version="1.0.1"), now=NOW
    )
    assert other_fw.serial_number != pki.alias.serial_number


def test_tcb_info_from_cert_without_extension(pki: Pki) -> None:
    with pytest.raises(CertificateError) as info:
        tcb_info_from_cert(pki.device_id)
    assert info.value.reason == "no_tcb_info"


def test_device_cert_profile(pki: Pki) -> None:
    cert = pki.device_cert
    assert cert.subject.rfc4514_string() == "CN=dev-1,O=tenant-1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:bastion:tenant:tenant-1:device:dev-1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + DEVICE_CERT_LIFETIME
    assert verify_chain([cert], [pki.tenant], now=NOW) == pki.tenant


def test_ca_profile(pki: Pki) -> None:
    ca = pki.tenant
    assert ca.issuer == ca.subject
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign
    assert ku.crl_sign
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.verify_directly_issued_by(ca)


# --- chain failures, each named ---------------------------------------------------------


def _reason(chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], now: dt.datetime = NOW) -> str:
    with pytest.raises(CertificateError) as info:
        verify_chain(chain, anchors, now=now)
    return info.value.reason


def _build(
    subject: str,
    issuer_name: x509.Name,
    issuer_key: PrivateKey,
    subject_key: PrivateKey,
    *,
    ca: bool | None = None,
    path_length: int | None = None,
    key_cert_sign: bool = True,
    critical_unknown: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, key_cert_sign, key_cert_sign, False, False), critical=True
        )
    if critical_unknown:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), critical=True
        )
    return builder.sign(issuer_key, hashes.SHA256())


def test_empty_chain(pki: Pki) -> None:
    assert _reason([], [pki.vendor]) == "empty_chain"


def test_chain_too_long(pki: Pki) -> None:
    assert _reason([pki.alias] * 5, [pki.vendor]) == "chain_too_long"


def test_expired_at_now(pki: Pki) -> None:
    later = NOW + DEVICE_CERT_LIFETIME + dt.timedelta(seconds=1)
    assert _reason([pki.device_cert], [pki.tenant], now=later) == "expired"


def test_not_yet_valid_at_now(pki: Pki) -> None:
    assert _reason([pki.device_cert], [pki.tenant], now=NOW - dt.timedelta(hours=1)) == "not_yet_valid"


def test_expired_trust_anchor(pki: Pki) -> None:
    # The vendor CA lives two years; the DeviceID and Alias certs outlive it.
    assert _reason([pki.alias, pki.device_id], [pki.vendor], now=NOW + dt.timedelta(days=800)) == "expired"


def test_wrong_issuer_alias_from_another_device(pki: Pki) -> None:
    other = Pki()
    assert _reason([other.alias, pki.device_id], [pki.vendor]) == "issuer_mismatch"


def test_alias_not_signed_by_the_device_id_key(pki: Pki) -> None:
    # Same issuer name as the real DeviceID cert, but signed by another key.
    forged = issue_alias_cert(generate_private_key(), pki.device_id, pki.alias_key.public_key(), TCB, now=NOW)
    assert _reason([forged, pki.device_id], [pki.vendor]) == "bad_signature"


def test_device_id_from_an_untrusted_vendor(pki: Pki) -> None:
    other = Pki(vendor_name="Some Other Vendor CA")
    assert _reason([other.alias, other.device_id], [pki.vendor]) == "untrusted_anchor"


def test_device_id_from_a_vendor_impostor_with_the_same_name(pki: Pki) -> None:
    impostor_key = generate_private_key()
    impostor = make_ca("Bastion Test Vendor CA", impostor_key, now=NOW, organization="Vendor")
    device_id = issue_device_id_cert(impostor_key, impostor, pki.device_key.public_key(), now=NOW)
    assert _reason([pki.alias, device_id], [pki.vendor]) == "bad_signature"


def test_tampered_signature(pki: Pki) -> None:
    der = bytearray(certificate_der(pki.device_cert))
    der[-5] ^= 0x01  # inside the ECDSA signature value
    assert _reason([x509.load_der_x509_certificate(bytes(der))], [pki.tenant]) == "bad_signature"


def test_non_ca_issuer(pki: Pki) -> None:
    leaf = _build("victim", pki.device_cert.subject, pki.leaf_key, generate_private_key())
    assert _reason([leaf, pki.device_cert], [pki.tenant]) == "not_ca"


def test_issuer_without_basic_constraints(pki: Pki) -> None:
    key = generate_private_key()
    issuer = _build("no-bc", pki.tenant.subject, pki.tenant_key, key)
    leaf = _build("leaf", issuer.subject, key, generate_private_key())
    assert _reason([leaf, issuer], [pki.tenant]) == "not_ca"


def test_issuer_without_key_cert_sign(pki: Pki) -> None:
    key = generate_private_key()
    issuer = _build("no-kcs", pki.tenant.subject, pki.tenant_key, key, ca=True, key_cert_sign=False)
    leaf = _build("leaf", issuer.subject, key, generate_private_key())
    assert _reason([leaf, issuer], [pki.tenant]) == "key_usage"


def test_device_id_pathlen_zero_forbids_a_ca_below_it(pki: Pki) -> None:
    sub_key = generate_private_key()
    sub_ca = _build("sub-ca", pki.device_id.subject, pki.device_key, sub_key, ca=True)
    leaf = _build("leaf", sub_ca.subject, sub_key, generate_private_key())
    assert _reason([leaf, sub_ca, pki.device_id], [pki.vendor]) == "path_length"


def test_unknown_critical_extension(pki: Pki) -> None:
    leaf = _build("leaf", pki.tenant.subject, pki.tenant_key, generate_private_key(), critical_unknown=True)
    assert _reason([leaf], [pki.tenant]) == "unknown_critical_extension"


def test_errors_name_the_certificate(pki: Pki) -> None:
    with pytest.raises(CertificateError, match=r"certificate 0 \(.*\): expired"):
        verify_chain([pki.device_cert], [pki.tenant], now=NOW + dt.timedelta(days=2))


# --- loading -----------------------------------------------------------------------------


def test_load_round_trips_and_bounds(pki: Pki) -> None:
    assert load_certificate_der(certificate_der(pki.alias)) == pki.alias
    assert load_certificate_pem(certificate_pem(pki.alias)) == pki.alias
    assert len(certificate_fingerprint(pki.alias)) == 64
    with pytest.raises(MalformedInput):
        load_certificate_der(b"\x30\x03\x02\x01\x01")
    with pytest.raises(MalformedInput):
        load_certificate_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(MalformedInput, match="larger than"):
        load_certificate_der(bytes(MAX_CERT_BYTES + 1))


# --- openssl as an independent verifier --------------------------------------------------

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args: str | Path) -> str:
    result = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _write(tmp_path: Path, **certs: x509.Certificate) -> dict[str, Path]:
    paths = {}
    for name, cert in certs.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(certificate_pem(cert))
    return paths


def _attime() -> str:
    return str(int(NOW.timestamp()))


def test_openssl_verifies_the_dice_chain(pki: Pki, tmp_path: Path) -> None:
    p = _write(tmp_path, vendor=pki.vendor, deviceid=pki.device_id, alias=pki.alias)
    out = _openssl("verify", "-attime", _attime(), "-CAfile", p["vendor"], "-untrusted", p["deviceid"], p["alias"])
    assert out.strip().endswith(": OK")
    out = _openssl("verify", "-attime", _attime(), "-partial_chain", "-CAfile", p["deviceid"], p["alias"])
    assert out.strip().endswith(": OK")


def test_openssl_rejects_a_forged_alias(pki: Pki, tmp_path: Path) -> None:
    forged = issue_alias_cert(generate_private_key(), pki.device_id, pki.alias_key.public_key(), TCB, now=NOW)
    p = _write(tmp_path, vendor=pki.vendor, deviceid=pki.device_id, alias=forged)
    result = subprocess.run(
        [OPENSSL, "verify", "-attime", _attime(), "-CAfile", p["vendor"], "-untrusted", p["deviceid"], p["alias"]],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode != 0


def test_openssl_verifies_the_device_cert_for_client_auth(pki: Pki, tmp_path: Path) -> None:
    p = _write(tmp_path, tenant=pki.tenant, device=pki.device_cert)
    out = _openssl("verify", "-attime", _attime(), "-purpose", "sslclient", "-CAfile", p["tenant"], p["device"])
    assert out.strip().endswith(": OK")


def test_openssl_parses_the_dice_tcb_info_extension(pki: Pki, tmp_path: Path) -> None:
    p = _write(tmp_path, alias=pki.alias)
    text = _openssl("x509", "-in", p["alias"], "-noout", "-text")
    assert "2.23.133.5.4.1:" in text
    dump = _openssl("asn1parse", "-in", p["alias"])
    lines = dump.splitlines()
    oid_line = next(i for i, line in enumerate(lines) if ":2.23.133.5.4.1" in line)
    value_line = lines[oid_line + 1]  # the extnValue OCTET STRING (non-critical: no BOOLEAN)
    assert "OCTET STRING" in value_line
    offset = value_line.split(":", 1)[0].strip()
    inner = _openssl("asn1parse", "-in", p["alias"], "-strparse", offset)
    assert re.search(r"cont \[ 0 \]", inner)  # vendor
    assert re.search(r"cont \[ 3 \]", inner)  # svn
    assert re.search(r"cont \[ 6 \]", inner)  # fwids
    assert inner.count(":sha256") == 2
    assert "A1" * 32 in inner
    assert "B2" * 32 in inner


# --- property tests -----------------------------------------------------------------------


@settings(max_examples=400, database=None, deadline=None)
@given(st.binary(max_size=200))
def test_decode_tcb_info_raises_only_malformed_input_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MalformedInput):
        decode_tcb_info(data)


@settings(max_examples=300, database=None, deadline=None)
@given(
    vendor=st.none() | st.text(max_size=20),
    svn=st.none() | st.integers(0, 2**63 - 1),
    layer=st.none() | st.integers(0, 2**63 - 1),
    digests=st.lists(st.binary(min_size=1, max_size=64), max_size=16),
)
def test_tcb_info_round_trips(vendor: str | None, svn: int | None, layer: int | None, digests: list[bytes]) -> None:
    info = TcbInfo(vendor=vendor, svn=svn, layer=layer, fwids=tuple(Fwid(OID_SHA256, d) for d in digests))
    der = encode_tcb_info(info)
    assert decode_tcb_info(der) == info
    with contextlib.suppress(MalformedInput):
        decode_tcb_info(der[:-1])
