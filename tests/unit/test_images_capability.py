"""Capability files: build, decode, verify; each refusal has its named reason (regression assets below)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto.cose import sign1
from bastion.crypto.keys import generate_private_key, public_key_bytes
from bastion.images.capability import (
    CONTENT_TYPE,
    CapabilityClaims,
    CapabilityKind,
    CapabilityLimits,
    build_capability,
    decode_capability,
    verify_capability,
)
from bastion.images.errors import CapabilityError, ImageError
from bastion.images.package import key_id

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DEVICE = "ab" * 32
OTHER_DEVICE = "cd" * 32
TENANT = "7d9e8a43-0000-4000-8000-000000000001"
CA_KEY = generate_private_key()
DEV_KEY = generate_private_key()


def claims(**changes: object) -> CapabilityClaims:
    base = CapabilityClaims(
        capability_id="0f5b8a52-5f0e-4d55-9d38-2a3f3b1f5e01",
        kind=CapabilityKind.APP_DEVELOPMENT,
        device_id=DEVICE,
        tenant_id=TENANT,
        developer_keys=(public_key_bytes(DEV_KEY.public_key()),),
        issued_at=int(NOW.timestamp()) - 60,
        expires_at=int(NOW.timestamp()) + 3600,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def verify(data: bytes, **kw: object) -> object:
    args: dict[str, object] = {"trusted_keys": [CA_KEY.public_key()], "device_id": DEVICE, "tenant_id": TENANT}
    args.update(kw)
    args.setdefault("now", NOW)
    return verify_capability(data, **args)  # type: ignore[arg-type]


def reason(data: bytes, **kw: object) -> str:
    with pytest.raises(CapabilityError) as info:
        verify(data, **kw)
    return info.value.reason


def test_a_good_file_verifies_and_says_what_it_unlocks() -> None:
    data = build_capability(claims(), CA_KEY)
    cap = verify_capability(data, trusted_keys=[CA_KEY.public_key()], device_id=DEVICE, tenant_id=TENANT, now=NOW)
    assert cap.kind is CapabilityKind.APP_DEVELOPMENT
    assert cap.device_id == DEVICE
    assert cap.developer_key_ids == (key_id(DEV_KEY.public_key()).hex(),)
    assert cap.signer == key_id(CA_KEY.public_key())
    assert cap.encoded == data
    assert cap.expires() == NOW + dt.timedelta(hours=1)
    assert decode_capability(data) == cap
    assert isinstance(CapabilityError("x", reason="malformed"), ImageError)


def test_a_forged_file_is_refused() -> None:
    # Signed by a key the device does not trust (an attacker's own "CA").
    assert reason(build_capability(claims(), generate_private_key())) == "unknown_signer"
    # Claims the tenant CA's kid but is signed by another key.
    forger = generate_private_key()
    forged = sign1(claims().to_cbor(), forger, content_type=CONTENT_TYPE, kid=key_id(CA_KEY.public_key()))
    assert reason(forged) == "bad_signature"
    # A genuine file whose payload was edited (another device) after signing.
    genuine = build_capability(claims(), CA_KEY)
    edited = genuine.replace(DEVICE.encode(), OTHER_DEVICE.encode())
    assert edited != genuine
    assert reason(edited) == "bad_signature"


def test_other_device_other_tenant_and_time_are_refused() -> None:
    assert reason(build_capability(claims(device_id=OTHER_DEVICE), CA_KEY)) == "wrong_device"
    assert reason(build_capability(claims(tenant_id="another-tenant"), CA_KEY)) == "wrong_tenant"
    data = build_capability(claims(), CA_KEY)
    assert reason(data, now=NOW + dt.timedelta(hours=1)) == "expired"
    assert reason(data, now=NOW - dt.timedelta(hours=1)) == "not_yet_valid"
    # Within the skew the issue time may be a little ahead of the device's clock.
    verify(data, now=NOW - dt.timedelta(seconds=60 + 299))


def test_kinds_and_developer_keys_are_checked() -> None:
    serving = build_capability(claims(kind=CapabilityKind.FIELD_SERVICING, developer_keys=()), CA_KEY)
    assert (
        verify_capability(
            serving, trusted_keys=[CA_KEY.public_key()], device_id=DEVICE, tenant_id=TENANT, now=NOW
        ).developer_keys
        == ()
    )
    with pytest.raises(CapabilityError, match="at least one developer key"):
        build_capability(claims(developer_keys=()), CA_KEY)
    with pytest.raises(CapabilityError, match="production-signed"):
        build_capability(claims(kind=CapabilityKind.FIELD_SERVICING), CA_KEY)
    many = tuple(public_key_bytes(generate_private_key().public_key()) for _ in range(9))
    with pytest.raises(CapabilityError, match="at most 8"):
        build_capability(claims(developer_keys=many), CA_KEY)
    twice = claims().developer_keys * 2
    with pytest.raises(CapabilityError, match="twice"):
        build_capability(claims(developer_keys=twice), CA_KEY)
    with pytest.raises(CapabilityError, match="point"):
        build_capability(claims(developer_keys=(b"\x04" + bytes(64),)), CA_KEY)


def _signed_payload(payload: object, *, content_type: object = CONTENT_TYPE) -> bytes:
    return sign1(cbor2.dumps(payload), CA_KEY, content_type=content_type, kid=key_id(CA_KEY.public_key()))  # type: ignore[arg-type]


def test_malformed_files_are_refused_before_any_key_is_tried() -> None:
    good = cbor2.loads(claims().to_cbor())
    cases = [
        b"",
        b"\x00" * 10,
        b"x" * 5000,
        _signed_payload(good, content_type="application/other"),
        _signed_payload({**good, "extra": 1}),
        _signed_payload({**good, "v": 2}),
        _signed_payload({**good, "kind": "rootAccess"}),
        _signed_payload({**good, "id": "not-a-uuid"}),
        _signed_payload({**good, "device_id": DEVICE.upper()}),
        _signed_payload({**good, "tenant_id": ""}),
        _signed_payload({**good, "iat": good["exp"]}),
        _signed_payload({**good, "iat": True}),
        _signed_payload({**good, "developer_keys": "key"}),
        _signed_payload([1, 2, 3]),
        sign1(claims().to_cbor(), CA_KEY, content_type=CONTENT_TYPE),  # no kid
    ]
    for data in cases:
        assert reason(data) == "malformed", data[:40]
    # Not in deterministic encoding: the same map with its keys in another order.
    shuffled = cbor2.dumps(dict(reversed(list(good.items()))))
    assert shuffled != claims().to_cbor()
    assert reason(sign1(shuffled, CA_KEY, content_type=CONTENT_TYPE, kid=key_id(CA_KEY.public_key()))) == "malformed"


def test_the_size_bound_is_a_named_limit() -> None:
    data = build_capability(claims(), CA_KEY)
    with pytest.raises(CapabilityError, match="larger than"):
        decode_capability(data, limits=CapabilityLimits(max_bytes=len(data) - 1))


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_capability_error(data: bytes) -> None:
    with pytest.raises(CapabilityError):
        verify(data)


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_of_a_good_file_is_refused(position: int, value: int) -> None:
    data = bytearray(build_capability(claims(), CA_KEY))
    position %= len(data)
    if data[position] == value:
        return
    data[position] = value
    with pytest.raises(CapabilityError):
        verify(bytes(data))
