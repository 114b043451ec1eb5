"""Pure tests of the evidence verifier: every check, in order, with the right code."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import replace

import cbor2
import pytest
from attest_sim import OS_DIGEST, SimDevice, SimVendor, der
from cryptography import x509

from bastion.crypto import certs, eat, keys
from bastion.crypto.errors import MalformedInput
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.verifier import ChainCache, VerifierLimits, verify_evidence

NOW = dt.datetime(2026, 1, 15, 12, 0, 0, tzinfo=dt.UTC)
NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def vendor() -> SimVendor:
    return SimVendor.create(now=NOW)


@pytest.fixture(scope="module")
def device(vendor: SimVendor) -> SimDevice:
    return SimDevice.manufacture(vendor, now=NOW)


def refused(token: bytes, anchors: list[x509.Certificate], code: FailureCode, **kw: object) -> AttestationFailure:
    with pytest.raises(AttestationFailure) as info:
        verify_evidence(token, trust_anchors=anchors, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]
    assert info.value.code is code, info.value
    return info.value


def test_honest_evidence_verifies(vendor: SimVendor, device: SimDevice) -> None:
    evidence = verify_evidence(device.eat(NONCE), trust_anchors=[vendor.cert], now=NOW)
    assert evidence.device_id == device.device_id
    assert evidence.claims.nonce == NONCE
    assert evidence.os_measurement == OS_DIGEST.hex()
    assert evidence.os_version == "1.0.0"
    assert evidence.vendor_ca == vendor.cert
    assert keys.public_key_bytes(evidence.key_to_certify) == keys.public_key_bytes(device.tls_key.public_key())


def test_untrusted_vendor_is_refused(device: SimDevice) -> None:
    other = SimVendor.create(now=NOW, name="Rogue Silicon CA")
    failure = refused(device.eat(NONCE), [other.cert], FailureCode.UNTRUSTED_CHAIN)
    assert failure.device_id == device.device_id  # recorded as claimed
    assert not failure.authenticated


def test_no_trust_anchors_is_refused(device: SimDevice) -> None:
    refused(device.eat(NONCE), [], FailureCode.UNTRUSTED_CHAIN)


def test_alias_not_signed_by_device_id_key(vendor: SimVendor, device: SimDevice) -> None:
    refused(device.eat_with_forged_alias(NONCE, now=NOW), [vendor.cert], FailureCode.UNTRUSTED_CHAIN)


def test_eat_signed_by_another_key(vendor: SimVendor, device: SimDevice) -> None:
    refused(device.eat_signed_by_other_key(NONCE), [vendor.cert], FailureCode.BAD_SIGNATURE)


def test_measurements_differing_from_tcb_info(vendor: SimVendor, device: SimDevice) -> None:
    token = device.eat_with_lying_measurements(NONCE, hashlib.sha256(b"a good OS").digest())
    failure = refused(token, [vendor.cert], FailureCode.MEASUREMENT_MISMATCH)
    assert failure.authenticated


def test_ueid_of_another_chip(vendor: SimVendor, device: SimDevice) -> None:
    other = keys.ueid_from_public_key(keys.generate_private_key().public_key())
    refused(device.eat_with_ueid(NONCE, other), [vendor.cert], FailureCode.UEID_MISMATCH)


def test_expired_chain_is_refused(vendor: SimVendor, device: SimDevice) -> None:
    later = NOW + certs.CA_LIFETIME + dt.timedelta(days=1)
    refused(device.eat(NONCE), [vendor.cert], FailureCode.UNTRUSTED_CHAIN, now=later)


def test_device_id_cert_must_be_pathlen_zero_ca(vendor: SimVendor) -> None:
    """A DeviceID certificate that is an end entity cannot vouch for an Alias key."""
    chip = SimDevice.manufacture(vendor, now=NOW)
    # Re-issue the "DeviceID" as the vendor's device certificate profile (CA:FALSE).
    fake = certs.issue_device_cert(
        vendor.key, vendor.cert, chip.device_key.public_key(), tenant_id="t", device_id=chip.device_id, now=NOW
    )
    token = eat.sign_eat(chip.claims(NONCE), chip.alias_key, x5chain=[der(chip.alias_cert), der(fake)])
    refused(token, [vendor.cert], FailureCode.UNTRUSTED_CHAIN)


def test_alias_without_tcb_info_is_refused(vendor: SimVendor) -> None:
    chip = SimDevice.manufacture(vendor, now=NOW)
    # A certificate for the Alias key, signed by the DeviceID key, but with no DiceTcbInfo.
    plain = certs.issue_device_cert(
        chip.device_key,
        chip.device_id_cert,
        chip.alias_key.public_key(),
        tenant_id="t",
        device_id=chip.device_id,
        now=NOW,
    )
    token = eat.sign_eat(chip.claims(NONCE), chip.alias_key, x5chain=[der(plain), der(chip.device_id_cert)])
    refused(token, [vendor.cert], FailureCode.UNTRUSTED_CHAIN)


@pytest.mark.parametrize(
    "token",
    [b"", b"garbage", b"\xd2\x84" + os.urandom(64), bytes(100)],
    ids=["empty", "text", "truncated-cose", "zeros"],
)
def test_garbage_is_malformed(vendor: SimVendor, token: bytes) -> None:
    failure = refused(token, [vendor.cert], FailureCode.MALFORMED_EVIDENCE)
    assert failure.malformed
    assert failure.device_id is None


def test_oversized_evidence(vendor: SimVendor, device: SimDevice) -> None:
    token = device.eat(NONCE)
    limits = VerifierLimits(max_evidence_bytes=len(token) - 1)
    failure = refused(token, [vendor.cert], FailureCode.EVIDENCE_TOO_LARGE, limits=limits)
    assert failure.malformed


def test_chain_with_one_certificate_is_malformed(vendor: SimVendor, device: SimDevice) -> None:
    token = eat.sign_eat(device.claims(NONCE), device.alias_key, x5chain=[der(device.alias_cert)])
    refused(token, [vendor.cert], FailureCode.MALFORMED_EVIDENCE)


def test_invalid_key_to_certify(vendor: SimVendor, device: SimDevice) -> None:

    claims = replace(device.claims(NONCE), key_to_certify=b"\x04" + bytes(64))  # not on the curve
    token = eat.sign_eat(claims, device.alias_key, x5chain=device.chain())
    refused(token, [vendor.cert], FailureCode.MALFORMED_EVIDENCE)


def test_tampered_byte_fails_closed(vendor: SimVendor, device: SimDevice) -> None:
    token = bytearray(device.eat(NONCE))
    for index in (len(token) - 1, len(token) // 2, 40):
        mutated = bytearray(token)
        mutated[index] ^= 0x01
        with pytest.raises(AttestationFailure):
            verify_evidence(bytes(mutated), trust_anchors=[vendor.cert], now=NOW)


class TestChainCache:
    def test_hit_skips_chain_verification_but_keeps_other_checks(self, vendor: SimVendor) -> None:
        chip = SimDevice.manufacture(vendor, now=NOW)
        cache = ChainCache()
        verify_evidence(chip.eat(NONCE), trust_anchors=[vendor.cert], now=NOW, cache=cache)
        assert len(cache) == 1
        verify_evidence(chip.eat(NONCE), trust_anchors=[vendor.cert], now=NOW, cache=cache)
        assert len(cache) == 1
        # A cached chain does not excuse a bad EAT signature.
        with pytest.raises(AttestationFailure) as info:
            verify_evidence(chip.eat_signed_by_other_key(NONCE), trust_anchors=[vendor.cert], now=NOW, cache=cache)
        assert info.value.code is FailureCode.BAD_SIGNATURE

    def test_hit_is_revalidated_against_anchors_and_time(self, vendor: SimVendor) -> None:
        chip = SimDevice.manufacture(vendor, now=NOW)
        cache = ChainCache()
        verify_evidence(chip.eat(NONCE), trust_anchors=[vendor.cert], now=NOW, cache=cache)
        other = SimVendor.create(now=NOW, name="Another vendor")
        refused(chip.eat(NONCE), [other.cert], FailureCode.UNTRUSTED_CHAIN, cache=cache)
        later = NOW + certs.CA_LIFETIME + dt.timedelta(days=1)
        refused(chip.eat(NONCE), [vendor.cert], FailureCode.UNTRUSTED_CHAIN, now=later, cache=cache)
        before = NOW - dt.timedelta(days=1)
        refused(chip.eat(NONCE), [vendor.cert], FailureCode.UNTRUSTED_CHAIN, now=before, cache=cache)

    def test_failures_are_not_cached(self, vendor: SimVendor) -> None:
        chip = SimDevice.manufacture(vendor, now=NOW)
        cache = ChainCache()
        refused(chip.eat_with_forged_alias(NONCE, now=NOW), [vendor.cert], FailureCode.UNTRUSTED_CHAIN, cache=cache)
        assert len(cache) == 0

    def test_bounded_lru(self, vendor: SimVendor) -> None:
        cache = ChainCache(max_entries=2)
        chips = [SimDevice.manufacture(vendor, now=NOW) for _ in range(3)]
        for chip in chips:
            verify_evidence(chip.eat(NONCE), trust_anchors=[vendor.cert], now=NOW, cache=cache)
        assert len(cache) == 2
        assert cache.get((der(chips[0].device_id_cert), der(chips[0].alias_cert))) is None
        assert cache.get((der(chips[2].device_id_cert), der(chips[2].alias_cert))) is not None

    def test_hit_reuses_the_parsed_chain_and_keeps_ueid_check(self, vendor: SimVendor) -> None:
        chip = SimDevice.manufacture(vendor, now=NOW)
        cache = ChainCache()
        first = verify_evidence(chip.eat(NONCE), trust_anchors=[vendor.cert], now=NOW, cache=cache)
        second = verify_evidence(chip.eat(NONCE), trust_anchors=[vendor.cert], now=NOW, cache=cache)
        assert second.alias_cert is first.alias_cert  # not parsed again
        assert second.device_id == first.device_id == chip.device_id
        other = SimDevice.manufacture(vendor, now=NOW)
        lie = chip.eat_with_ueid(NONCE, keys.ueid_from_public_key(other.device_key.public_key()))
        refused(lie, [vendor.cert], FailureCode.UEID_MISMATCH, cache=cache)


# --- the claims decoder's deterministic-encoding check (cheaper, equally strict) ---------


def _claims_map(device: SimDevice) -> dict[int, object]:
    decoded = cbor2.loads(eat.encode_claims(device.claims(NONCE, now=NOW)))
    assert isinstance(decoded, dict)
    return decoded


def _measurements_with(device: SimDevice, entry: list[object]) -> dict[int, object]:
    claims_map = _claims_map(device)
    measurements = list(claims_map[eat.CLAIM_MEASUREMENTS])  # type: ignore[call-overload]
    measurements[0] = entry
    return claims_map | {eat.CLAIM_MEASUREMENTS: measurements}


def test_decoder_accepts_exactly_what_encode_claims_writes(device: SimDevice) -> None:
    claims = device.claims(NONCE, now=NOW)
    assert eat.decode_claims(eat.encode_claims(claims)) == claims


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda m: {(float(k) if k == eat.CLAIM_IAT else k): v for k, v in m.items()}, id="float-key"),
        pytest.param(lambda m: m | {eat.CLAIM_SWVERSION: ["1.0.0", 1.0]}, id="float-version-scheme"),
        pytest.param(lambda m: m | {eat.CLAIM_SWVERSION: ["1.0.0", True]}, id="bool-version-scheme"),
    ],
)
def test_decoder_rejects_values_that_only_compare_equal(device: SimDevice, mutate: object) -> None:
    data = cbor2.dumps(mutate(_claims_map(device)), canonical=True)  # type: ignore[operator]
    with pytest.raises(MalformedInput):
        eat.decode_claims(data)


def test_decoder_rejects_a_float_measurement_content_format(device: SimDevice) -> None:
    body = cbor2.dumps({"component": "bootloader", "alg": "sha-256", "digest": bytes(32)}, canonical=True)
    data = cbor2.dumps(_measurements_with(device, [60.0, body]), canonical=True)
    with pytest.raises(MalformedInput, match="content-format"):
        eat.decode_claims(data)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(  # keys not in deterministic order
            cbor2.dumps({"component": "bootloader", "digest": bytes(32), "alg": "sha-256"}),
            id="key-order",
        ),
        pytest.param(  # a non-minimal length for the text "alg"
            b"\xa3"
            + b"\x78\x03alg"
            + cbor2.dumps("sha-256")
            + b"\x66digest"
            + cbor2.dumps(bytes(32))
            + b"\x69component"
            + cbor2.dumps("bootloader"),
            id="non-minimal-length",
        ),
    ],
)
def test_decoder_rejects_a_non_deterministic_measurement_body(device: SimDevice, body: bytes) -> None:
    assert cbor2.loads(body) == {"component": "bootloader", "alg": "sha-256", "digest": bytes(32)}
    data = cbor2.dumps(_measurements_with(device, [60, body]), canonical=True)
    with pytest.raises(MalformedInput, match="deterministic"):
        eat.decode_claims(data)


def test_key_point_is_still_checked_by_the_verifier(vendor: SimVendor, device: SimDevice) -> None:
    """decode_eat(verify_key_point=False) defers the on-curve check; the verifier makes it."""
    claims = replace(device.claims(NONCE), key_to_certify=b"\x04" + bytes(64))
    token = device.eat(NONCE, claims=claims)
    eat.decode_eat(token, verify_key_point=False)
    with pytest.raises(MalformedInput):
        eat.decode_eat(token)
    failure = refused(token, [vendor.cert], FailureCode.MALFORMED_EVIDENCE)
    assert failure.authenticated
