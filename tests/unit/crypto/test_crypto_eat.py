"""The Bastion EAT profile: round trip, strict decoding, bounds and fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto import eat
from bastion.crypto.cose import decode_sign1, sign1, verify_sign1
from bastion.crypto.eat import (
    DEFAULT_MAX_EAT_BYTES,
    EAT_PROFILE,
    MAX_COUNTERS,
    MAX_INSTALLED_APPS,
    MAX_MEASUREMENTS,
    DebugStatus,
    EatClaims,
    InstalledApp,
    Measurement,
    decode_claims,
    decode_eat,
    encode_claims,
    sign_eat,
)
from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.keys import generate_private_key, public_key_bytes, ueid_from_public_key

_DEVICE_KEY = generate_private_key()
_ALIAS_KEY = generate_private_key()
_NEW_KEY = generate_private_key()


def _claims(**changes: Any) -> EatClaims:
    base = EatClaims(
        nonce=bytes(range(32)),
        ueid=ueid_from_public_key(_DEVICE_KEY.public_key()),
        secboot=True,
        dbgstat=DebugStatus.DISABLED_PERMANENTLY,
        measurements=(Measurement("bootloader", b"\x11" * 32), Measurement("os", b"\x22" * 32)),
        swname="bastion-os",
        swversion="1.0.0",
        boot_slot="A",
        rollback_counters={"os": 3, "bootloader": 1},
        key_to_certify=public_key_bytes(_NEW_KEY.public_key()),
        iat=1_767_225_600,
        installed_apps=(InstalledApp("com.example.blink", "2.1.0"),),
    )
    return dataclasses.replace(base, **changes)


def _claims_map() -> dict[int, Any]:
    claims_map: dict[int, Any] = cbor2.loads(encode_claims(_claims()))
    return claims_map


def test_round_trip() -> None:
    claims = _claims()
    assert decode_claims(encode_claims(claims)) == claims


def test_encoding_uses_the_registered_claim_keys() -> None:
    claims_map = cbor2.loads(encode_claims(_claims()))
    assert set(claims_map) == {6, 10, 256, 262, 263, 265, 270, 271, 273, -70001, -70002, -70003, -70004}
    assert claims_map[265] == EAT_PROFILE
    assert claims_map[271] == ["1.0.0", 1]
    assert claims_map[263] == 3
    content_format, body = claims_map[273][0]
    assert content_format == 60
    assert cbor2.loads(body) == {"component": "bootloader", "alg": "sha-256", "digest": b"\x11" * 32}


def test_encoding_is_deterministic_and_canonical() -> None:
    reordered = _claims(rollback_counters={"bootloader": 1, "os": 3})
    assert encode_claims(reordered) == encode_claims(_claims())
    data = encode_claims(_claims())
    assert cbor2.dumps(cbor2.loads(data), canonical=True) == data


def test_signed_eat_round_trip_and_signature() -> None:
    token = sign_eat(_claims(), _ALIAS_KEY, x5chain=[b"alias", b"deviceid"])
    message, claims = decode_eat(token)
    verify_sign1(message, _ALIAS_KEY.public_key())
    assert claims == _claims()
    assert message.x5chain == [b"alias", b"deviceid"]
    with pytest.raises(InvalidSignature):
        verify_sign1(message, _DEVICE_KEY.public_key())


def test_eat_without_x5chain_rejected() -> None:
    token = sign1(encode_claims(_claims()), _ALIAS_KEY)
    with pytest.raises(MalformedInput, match="x5chain"):
        decode_eat(token)


def test_unknown_claim_rejected() -> None:
    with pytest.raises(MalformedInput, match="outside the Bastion EAT profile"):
        decode_claims(cbor2.dumps(_claims_map() | {-70099: 1}, canonical=True))


def test_unknown_text_claim_rejected() -> None:
    data = cbor2.dumps(_claims_map() | {"extra": 1}, canonical=True)
    with pytest.raises(MalformedInput):
        decode_claims(data)


@pytest.mark.parametrize("key", [6, 10, 256, 262, 263, 265, 270, 271, 273, -70001, -70002, -70003, -70004])
def test_missing_claim_rejected(key: int) -> None:
    claims_map = _claims_map()
    del claims_map[key]
    with pytest.raises(MalformedInput, match="lacks required"):
        decode_claims(cbor2.dumps(claims_map, canonical=True))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (6, -1),
        (6, True),
        (6, 1.5),
        (10, b"short"),
        (10, bytes(65)),
        (10, "nonce"),
        (256, bytes(33)),  # type byte 0x00 is not RAND
        (256, b"\x01" + bytes(31)),
        (262, 1),
        (263, 5),
        (263, True),
        (265, "tag:other,2026:eat"),
        (270, ""),
        (270, "x" * 129),
        (271, "1.0.0"),
        (271, ["1.0.0", 2]),
        (271, ["1.0.0", True]),
        (271, ["1.0.0"]),
        (273, []),
        (273, [[0, b""]]),
        (273, [[60, cbor2.dumps({"component": "os", "alg": "sha-1", "digest": bytes(20)})]]),
        (273, [[60, cbor2.dumps({"component": "os", "alg": "sha-256", "digest": bytes(31)})]]),
        (273, [[60, cbor2.dumps({"component": "os", "alg": "sha-256", "digest": bytes(32), "x": 1})]]),
        (273, [[60, b"\xff"]]),
        (273, [[60, cbor2.dumps({"component": "", "alg": "sha-256", "digest": bytes(32)})]]),
        (273, [[60, cbor2.dumps({"component": "os", "alg": "sha-256", "digest": bytes(32)})]] * 17),
        (-70001, "C"),
        (-70001, b"A"),
        (-70002, {"os": -1}),
        (-70002, {"os": 2**63}),
        (-70002, {1: 1}),
        (-70002, {f"c{i}": i for i in range(MAX_COUNTERS + 1)}),
        (-70003, [{"id": "a"}]),
        (-70003, [{"id": "a", "version": 1}]),
        (-70003, [{"id": "a", "version": "1"}] * (MAX_INSTALLED_APPS + 1)),
        (-70004, bytes(65)),  # right size, not a point on P-256
        pytest.param(-70004, public_key_bytes(_NEW_KEY.public_key())[:64], id="-70004-truncated-point"),
    ],
)
def test_claim_of_wrong_type_or_outside_bounds_rejected(key: int, value: Any) -> None:
    data = cbor2.dumps(_claims_map() | {key: value}, canonical=True)
    with pytest.raises(MalformedInput):
        decode_claims(data)


def test_bounds_are_the_named_constants() -> None:
    at_limit = _claims(
        measurements=tuple(Measurement(f"stage{i}", bytes(32)) for i in range(MAX_MEASUREMENTS)),
        installed_apps=tuple(InstalledApp(f"app{i}", "1") for i in range(MAX_INSTALLED_APPS)),
        rollback_counters={f"c{i}": i for i in range(MAX_COUNTERS)},
    )
    assert decode_claims(encode_claims(at_limit)) == at_limit


def test_oversize_claims_rejected() -> None:
    big = _claims(installed_apps=tuple(InstalledApp("a" * 128, "v" * 128) for _ in range(MAX_INSTALLED_APPS)))
    data = encode_claims(big)
    assert len(data) > DEFAULT_MAX_EAT_BYTES
    with pytest.raises(MalformedInput, match="larger than"):
        decode_claims(data)


def test_oversize_token_rejected() -> None:
    with pytest.raises(MalformedInput, match="larger than"):
        decode_eat(b"\x00" * (DEFAULT_MAX_EAT_BYTES + 1))


def test_duplicate_map_key_rejected() -> None:
    data = encode_claims(_claims())
    # Append a second iat: bump the map header's count (0xad = 13 entries -> 14).
    assert data[0] == 0xAD
    duplicated = b"\xae" + data[1:] + b"\x06\x00"
    with pytest.raises(MalformedInput, match="deterministic"):
        decode_claims(duplicated)


def test_non_deterministic_encoding_rejected() -> None:
    claims_map = _claims_map()
    non_canonical = cbor2.dumps(dict(sorted(claims_map.items(), key=lambda kv: -abs(kv[0]))))
    assert cbor2.loads(non_canonical) == claims_map
    with pytest.raises(MalformedInput, match="deterministic"):
        decode_claims(non_canonical)


def test_claims_not_a_map_rejected() -> None:
    with pytest.raises(MalformedInput, match="not a CBOR map"):
        decode_claims(cbor2.dumps([1, 2]))


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(MalformedInput, match="trailing"):
        decode_claims(encode_claims(_claims()) + b"\x00")


def test_key_point_check_can_be_skipped_for_fixtures() -> None:
    fake = _claims(key_to_certify=b"\x04" + bytes(64))
    with pytest.raises(MalformedInput):
        decode_claims(encode_claims(fake))
    assert decode_claims(encode_claims(fake), verify_key_point=False) == fake


def test_profile_constants_are_the_documented_ones() -> None:
    assert eat.CLAIM_BOOT_SLOT == -70001
    assert eat.CLAIM_ROLLBACK_COUNTERS == -70002
    assert eat.CLAIM_INSTALLED_APPS == -70003
    assert eat.CLAIM_KEY_TO_CERTIFY == -70004
    assert eat.CLAIM_INSECURE_NO_SANDBOX == -70006
    assert eat.CONTENT_FORMAT_CBOR == 60


def test_insecure_no_sandbox_is_claimed_only_when_true() -> None:
    insecure = _claims(insecure_no_sandbox=True)
    claims_map = cbor2.loads(encode_claims(insecure))
    assert claims_map[-70006] is True
    assert decode_claims(encode_claims(insecure)) == insecure
    assert -70006 not in cbor2.loads(encode_claims(_claims()))
    assert decode_claims(encode_claims(_claims())).insecure_no_sandbox is False


@pytest.mark.parametrize("value", [False, 1, 0, "true", None, b"\x01"])
def test_insecure_no_sandbox_other_than_true_is_refused(value: object) -> None:
    data = cbor2.dumps(_claims_map() | {-70006: value}, canonical=True)
    with pytest.raises(MalformedInput, match="insecure no sandbox"):
        decode_claims(data)


# --- property tests -----------------------------------------------------------------

_leaves = st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.binary(max_size=70) | st.text(max_size=10)
_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_CLAIM_KEYS = sorted({*_claims_map(), eat.CLAIM_INSECURE_NO_SANDBOX})


@settings(max_examples=400, database=None, deadline=None)
@given(st.binary(max_size=400))
def test_decode_claims_raises_only_malformed_input_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MalformedInput):
        decode_claims(data)


@settings(max_examples=400, database=None, deadline=None)
@given(key=st.sampled_from(_CLAIM_KEYS), value=_values)
def test_decode_claims_raises_only_malformed_input_when_one_claim_is_replaced(key: int, value: Any) -> None:
    data = cbor2.dumps(_claims_map() | {key: value}, canonical=True)
    try:
        claims = decode_claims(data)
    except MalformedInput:
        return
    assert encode_claims(claims) == data


@settings(max_examples=200, database=None, deadline=None)
@given(st.data())
def test_signed_eat_byte_flips_are_caught(data: st.DataObject) -> None:
    token = _SIGNED
    index = data.draw(st.integers(0, len(token) - 1))
    mutated = token[:index] + bytes([token[index] ^ data.draw(st.integers(1, 255))]) + token[index + 1 :]
    try:
        message, _ = decode_eat(mutated)
    except MalformedInput:
        return
    with pytest.raises(InvalidSignature):
        verify_sign1(message, _ALIAS_KEY.public_key())


_SIGNED = sign_eat(_claims(), _ALIAS_KEY, x5chain=[b"alias", b"deviceid"])


def test_decode_sign1_accepts_signed_eat() -> None:
    assert decode_sign1(_SIGNED).payload == encode_claims(_claims())


def test_the_optional_capability_claim_round_trips_and_is_absent_by_default() -> None:
    assert eat.CLAIM_CAPABILITY not in _claims_map()
    assert decode_claims(encode_claims(_claims())).capability is None
    with_cap = _claims(capability=b"\xd2capability file")
    assert decode_claims(encode_claims(with_cap)) == with_cap
    assert cbor2.loads(encode_claims(with_cap))[eat.CLAIM_CAPABILITY] == b"\xd2capability file"


def test_the_capability_claim_is_a_bounded_bstr() -> None:
    for bad in (b"", b"x" * (eat.MAX_CAPABILITY_BYTES + 1), "text", 7):
        claims_map = _claims_map()
        claims_map[eat.CLAIM_CAPABILITY] = bad
        with pytest.raises(MalformedInput, match="device capability"):
            decode_claims(cbor2.dumps(claims_map, canonical=True))
