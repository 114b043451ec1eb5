"""Pins the public names of bastion.crypto that other packages code against."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "bastion.crypto.cose": {
        "ALG_ES256", "DEFAULT_MAX_MESSAGE_BYTES", "HEADER_ALG", "HEADER_CONTENT_TYPE", "HEADER_CRIT",
        "HEADER_KID", "HEADER_X5CHAIN", "MAX_X5CHAIN_CERTS", "Sign1Message", "cbor_loads_exact",
        "decode_sign1", "sign1",
        "verify_sign1",
    },
    "bastion.crypto.eat": {
        "DEFAULT_MAX_EAT_BYTES", "EAT_PROFILE", "MAX_CAPABILITY_BYTES", "DebugStatus", "EatClaims", "InstalledApp",
        "Measurement", "decode_claims", "decode_eat", "encode_claims", "sign_eat",
    },
    "bastion.crypto.certs": {
        "ALIAS_NOT_AFTER", "ALIAS_NOT_BEFORE", "CA_LIFETIME", "CLOCK_SKEW", "DEVICE_CERT_LIFETIME",
        "DEVICE_ID_CERT_LIFETIME", "MAX_CERT_BYTES", "MAX_CHAIN_DEPTH", "MAX_TCB_INFO_BYTES", "OID_SHA256",
        "OID_TCG_DICE_TCB_INFO", "Fwid", "TcbInfo", "certificate_der", "certificate_fingerprint",
        "certificate_pem", "decode_tcb_info", "device_cert_uri", "encode_tcb_info", "issue_alias_cert",
        "issue_device_cert", "issue_device_id_cert", "load_certificate_der", "load_certificate_pem", "make_ca",
        "tcb_info_from_cert", "verify_chain",
    },
    "bastion.crypto.errors": {"CertificateError", "CryptoError", "InvalidSignature", "MalformedInput"},
    "bastion.crypto.dice": {"ASYM_SALT", "CDI_SIZE", "derive_cdi", "derive_key_pair"},
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exported_names_are_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == EXPECTED[module]
    for name in mod.__all__:
        assert hasattr(mod, name)


def test_every_error_is_a_crypto_error() -> None:
    from bastion.crypto import errors

    for name in ("CertificateError", "InvalidSignature", "MalformedInput"):
        assert issubclass(getattr(errors, name), errors.CryptoError)
