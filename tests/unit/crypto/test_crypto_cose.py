"""COSE_Sign1 ES256: RFC 9052 / cose-wg Examples vectors, interop, and strict decoding."""

from __future__ import annotations

import base64
import contextlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.crypto.cose import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_X5CHAIN_CERTS,
    decode_sign1,
    sign1,
    verify_sign1,
)
from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.keys import PrivateKey, generate_private_key, private_key_pem, public_key_pem

# --- cose-wg/Examples, sign1-tests/ (the P-256 key "11" used throughout) ------------


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


KEY_11_X = _b64url("usWxHK2PmfnHKwXPS54m0kTcGJ90UiglWiGahtagnv8")
KEY_11_Y = _b64url("IBOL-C3BttVivg-lSreASjpkttcsz-1rb7btKLv8EX4")
KEY_11_D = _b64url("V8kgd2ZBRuh2dgyVINBUqpPDr7BOMGcF22CQMIUHtNM")
CONTENT = b"This is the content."
_SIG_PREFIX = "5840EAE868ECC176883766C5DC5BA5B8DCA25DAB3C2E56A551CE5705B793914348E1"
_BODY = "A10442313154546869732069732074686520636F6E74656E742E"  # {4: h'3131'}, payload

#: sign-pass-01 "Redo protected": protected is h'A0' (empty map), alg unprotected.
SIGN_PASS_01 = (
    "D28441A0A201260442313154546869732069732074686520636F6E74656E742E"
    + _SIG_PREFIX[:-2]
    + "E11A02E5F0344BF2D4EE5C7FD75A68A9F5E0B3CC1F1FC1409C189566586FF9D610"
)
#: sign-pass-02 "External": external_aad h'11aa22bb33cc44dd55006699'.
SIGN_PASS_02 = (
    "D28443A10126" + _BODY + _SIG_PREFIX + ("55388B10C4F1B59A6733EAB416870A945111A4B2FBDBEF33A77234B1DEFF2F9B")
)
SIGN_PASS_02_AAD = bytes.fromhex("11aa22bb33cc44dd55006699")
#: sign-pass-03 "Remove CBOR Tag": untagged COSE_Sign1.
SIGN_PASS_03 = "8443A10126" + _BODY + _SIG_PREFIX + ("9F43D6C6BA654472DA301B645B293C9BA939295B97C4BDB847782BFF384C5794")
_PASS_03_SIG = _SIG_PREFIX + "9F43D6C6BA654472DA301B645B293C9BA939295B97C4BDB847782BFF384C5794"
#: sign-fail-01 "Wrong CBOR Tag" (998).
SIGN_FAIL_01 = "D903E68443A10126" + _BODY + _PASS_03_SIG
#: sign-fail-02 "Change signature" (payload changed after signing).
SIGN_FAIL_02 = "D28443A10126A10442313154546869732069732074686520636F6E74656E742F" + _PASS_03_SIG
#: sign-fail-03 "Change Sign Algorithm" to -999.
SIGN_FAIL_03 = "D28445A1013903E6" + _BODY + _PASS_03_SIG
#: sign-fail-04 "Change Sign Algorithm" to "unknown".
SIGN_FAIL_04 = "D2844AA10167756E6B6E6F776E" + _BODY + _PASS_03_SIG
#: sign-fail-06 "Add protected attribute" (content type 0).
SIGN_FAIL_06 = "D28445A201260300" + _BODY + _PASS_03_SIG
#: sign-fail-07 "Remove protected attribute".
SIGN_FAIL_07 = (
    "D28443A10126" + _BODY + _SIG_PREFIX + ("72727F48461FABBBA2E343492DDECAC3983686250BC68E9F1A7A07D41225B59F")
)


@pytest.fixture(scope="module")
def key_11() -> PrivateKey:
    numbers = ec.EllipticCurvePrivateNumbers(
        int.from_bytes(KEY_11_D, "big"),
        ec.EllipticCurvePublicNumbers(int.from_bytes(KEY_11_X, "big"), int.from_bytes(KEY_11_Y, "big"), ec.SECP256R1()),
    )
    return numbers.private_key()


def test_vectors_are_transcribed_faithfully() -> None:
    # Guards the string surgery above against the published cbor of sign-pass-01.
    assert SIGN_PASS_01 == (
        "D28441A0A201260442313154546869732069732074686520636F6E74656E742E5840EAE868ECC17688"
        "3766C5DC5BA5B8DCA25DAB3C2E56A551CE5705B793914348E11A02E5F0344BF2D4EE5C7FD75A68A9F5"
        "E0B3CC1F1FC1409C189566586FF9D610"
    )


@pytest.mark.parametrize(
    ("vector", "aad"),
    [(SIGN_PASS_01, b""), (SIGN_PASS_02, SIGN_PASS_02_AAD), (SIGN_PASS_03, b"")],
    ids=["sign-pass-01", "sign-pass-02", "sign-pass-03"],
)
def test_cose_wg_pass_vectors_verify(key_11: PrivateKey, vector: str, aad: bytes) -> None:
    message = decode_sign1(bytes.fromhex(vector))
    verify_sign1(message, key_11.public_key(), external_aad=aad)
    assert message.payload == CONTENT
    assert message.unprotected[4] == b"11"


def test_sign_pass_02_fails_without_its_external_aad(key_11: PrivateKey) -> None:
    with pytest.raises(InvalidSignature):
        verify_sign1(decode_sign1(bytes.fromhex(SIGN_PASS_02)), key_11.public_key())


@pytest.mark.parametrize("vector", [SIGN_FAIL_01, SIGN_FAIL_03, SIGN_FAIL_04], ids=["fail-01", "fail-03", "fail-04"])
def test_cose_wg_fail_vectors_rejected_at_decode(vector: str) -> None:
    with pytest.raises(MalformedInput):
        decode_sign1(bytes.fromhex(vector))


@pytest.mark.parametrize("vector", [SIGN_FAIL_02, SIGN_FAIL_06, SIGN_FAIL_07], ids=["fail-02", "fail-06", "fail-07"])
def test_cose_wg_fail_vectors_rejected_at_verify(key_11: PrivateKey, vector: str) -> None:
    message = decode_sign1(bytes.fromhex(vector))
    with pytest.raises(InvalidSignature):
        verify_sign1(message, key_11.public_key())


# --- our own messages ---------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key()


def test_round_trip_with_x5chain_and_aad(key: PrivateKey) -> None:
    chain = [b"leaf-der", b"issuer-der"]
    message = decode_sign1(sign1(b"payload", key, x5chain=chain, external_aad=b"aad"))
    verify_sign1(message, key.public_key(), external_aad=b"aad")
    assert message.x5chain == chain
    assert message.protected[33] == chain
    with pytest.raises(InvalidSignature):
        verify_sign1(message, key.public_key(), external_aad=b"other")


def test_single_certificate_x5chain_is_a_bstr(key: PrivateKey) -> None:
    data = sign1(b"p", key, x5chain=[b"only"])
    protected = cbor2.loads(cbor2.loads(data).value[0])
    assert protected == {1: -7, 33: b"only"}  # RFC 9360: one cert is a bare bstr
    assert decode_sign1(data).x5chain == [b"only"]


def test_message_is_tagged_18_with_minimal_protected_header(key: PrivateKey) -> None:
    item = cbor2.loads(sign1(b"p", key, content_type=60))
    assert item.tag == 18
    assert item.value[0] == bytes.fromhex("a20126 03183c".replace(" ", ""))
    assert item.value[1] == {}
    assert len(item.value[3]) == 64


def test_wrong_key_is_invalid_signature(key: PrivateKey) -> None:
    message = decode_sign1(sign1(b"p", key))
    with pytest.raises(InvalidSignature):
        verify_sign1(message, generate_private_key().public_key())


def test_verify_uses_received_protected_bytes(key: PrivateKey) -> None:
    # Re-encoding the protected map non-canonically (same meaning, other bytes)
    # must break the signature: the Sig_structure covers the bytes as sent.
    item = cbor2.loads(sign1(b"p", key))
    item.value[0] = bytes.fromhex("a1013806")  # {1: -7} with -7 in a 1-byte argument
    message = decode_sign1(cbor2.dumps(item))
    assert message.protected == {1: -7}
    with pytest.raises(InvalidSignature):
        verify_sign1(message, key.public_key())


def _message(
    protected: dict[object, object] | bytes,
    unprotected: dict[object, object] | None = None,
    payload: object = b"p",
    signature: object = bytes(64),
    tag: int | None = 18,
) -> bytes:
    protected_bytes = protected if isinstance(protected, bytes) else cbor2.dumps(protected)
    body = [protected_bytes, unprotected or {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(tag, body) if tag is not None else body)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_message({1: -7, 2: [99], 99: 1}), "crit names an unknown label"),
        (_message({1: -7, 2: ["x"], "x": 1}), "crit names an unknown tstr label"),
        (_message({1: -7, 2: []}), "empty crit"),
        (_message({1: -7, 2: [3]}), "crit label absent from protected"),
        (_message({1: -7}, {2: [1]}), "crit in unprotected"),
        (_message({1: -35}), "ES384 is not accepted"),
        (_message({}), "no alg at all"),
        (_message({1: -7}, {1: -7}), "label in both buckets"),
        (_message({1: True}), "alg true"),
        (_message({1: -7}, {33: b"c"}), "x5chain unprotected"),
        (_message({1: -7, 33: [b"c"]}), "x5chain array of one"),
        (_message({1: -7, 33: [b"c"] * (MAX_X5CHAIN_CERTS + 1)}), "x5chain too long"),
        (_message({1: -7, 33: 5}), "x5chain not bstr"),
        (_message(b"\x01"), "protected not a map"),
        (_message(b"\xa1\x01"), "protected truncated"),
        (_message({1: -7}, payload=None), "detached payload"),
        (_message({1: -7}, signature=bytes(63)), "short signature"),
        (_message({1: -7}, signature="sig"), "signature not bstr"),
        (_message({1: -7}, tag=17), "COSE_Mac0 tag"),
        (_message({1: -7}) + b"\x00", "trailing bytes"),
        (cbor2.dumps([b"", {}, b""]), "three elements"),
        (cbor2.dumps(cbor2.CBORTag(18, {})), "not an array"),
        (b"", "empty input"),
        (b"\xff", "not CBOR"),
    ],
)
def test_malformed_messages_are_rejected(data: bytes, why: str) -> None:
    with pytest.raises(MalformedInput):
        decode_sign1(data)


def test_crit_naming_an_understood_label_is_accepted(key: PrivateKey) -> None:
    data = _message({1: -7, 2: [3], 3: 60})
    assert decode_sign1(data).protected[3] == 60


def test_oversize_message_rejected_before_parsing(key: PrivateKey) -> None:
    data = sign1(b"x" * DEFAULT_MAX_MESSAGE_BYTES, key)
    with pytest.raises(MalformedInput, match="larger than"):
        decode_sign1(data)
    assert decode_sign1(data, max_size=len(data)).payload == b"x" * DEFAULT_MAX_MESSAGE_BYTES


# --- interop with pycose and python-cwt ------------------------------------------


def test_our_message_verifies_under_pycose(key: PrivateKey) -> None:
    from pycose.keys.ec2 import EC2Key
    from pycose.messages.sign1message import Sign1Message as PycoseSign1

    numbers = key.public_key().public_numbers()
    cose_key = EC2Key(crv="P_256", x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))
    decoded = PycoseSign1.decode(sign1(b"interop", key, x5chain=[b"a", b"b"], external_aad=b"e"))
    decoded.key = cose_key
    decoded.external_aad = b"e"  # type: ignore[misc]  # pycose has a setter mypy does not see
    assert decoded.verify_signature()
    decoded.external_aad = b"f"  # type: ignore[misc]
    assert not decoded.verify_signature()


def test_pycose_message_verifies_under_ours(key: PrivateKey) -> None:
    from pycose.algorithms import Es256
    from pycose.headers import KID, Algorithm
    from pycose.keys.ec2 import EC2Key
    from pycose.messages.sign1message import Sign1Message as PycoseSign1

    numbers = key.private_numbers()
    pub = numbers.public_numbers
    cose_key = EC2Key(
        crv="P_256",
        x=pub.x.to_bytes(32, "big"),
        y=pub.y.to_bytes(32, "big"),
        d=numbers.private_value.to_bytes(32, "big"),
    )
    msg = PycoseSign1(phdr={Algorithm: Es256}, uhdr={KID: b"k"}, payload=b"from pycose")
    msg.key = cose_key
    message = decode_sign1(msg.encode())
    verify_sign1(message, key.public_key())
    assert message.payload == b"from pycose"


def test_our_message_verifies_under_python_cwt(key: PrivateKey) -> None:
    from cwt import COSE, COSEKey

    public = COSEKey.from_pem(public_key_pem(key.public_key()), alg="ES256")
    assert COSE.new().decode(sign1(b"to cwt", key, x5chain=[b"a"]), public) == b"to cwt"


def test_python_cwt_message_verifies_under_ours(key: PrivateKey) -> None:
    from cwt import COSE, COSEKey

    private = COSEKey.from_pem(private_key_pem(key), alg="ES256")
    data = COSE.new().encode_and_sign(b"from cwt", private, protected={"alg": "ES256"}, unprotected={"kid": b"1"})
    message = decode_sign1(data)
    verify_sign1(message, key.public_key())
    assert message.payload == b"from cwt"


# --- property tests -----------------------------------------------------------------

_cbor_leaves = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=80) | st.text(max_size=20)
_cbor_values = st.recursive(
    _cbor_leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-40, 40) | st.text(max_size=3), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=400, database=None, deadline=None)
@given(st.binary(max_size=300))
def test_decode_sign1_raises_only_malformed_input_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MalformedInput):
        decode_sign1(data)


@settings(max_examples=400, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protected=_cbor_values,
    unprotected=_cbor_values,
    payload=_cbor_values,
    signature=st.binary(min_size=64, max_size=64) | _cbor_values,
    tagged=st.booleans(),
)
def test_decode_sign1_raises_only_malformed_input_on_random_structures(
    protected: object, unprotected: object, payload: object, signature: object, tagged: bool
) -> None:
    body = [cbor2.dumps(protected), unprotected, payload, signature]
    data = cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)
    try:
        message = decode_sign1(data)
    except MalformedInput:
        return
    assert len(message.signature) == 64


@settings(max_examples=200, database=None, deadline=None)
@given(st.data())
def test_any_single_byte_flip_never_verifies(data: st.DataObject) -> None:
    key = _PROPERTY_KEY
    message = sign1(b"stable payload", key, x5chain=[b"c1", b"c2"])
    index = data.draw(st.integers(0, len(message) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = message[:index] + bytes([message[index] ^ flip]) + message[index + 1 :]
    try:
        decoded = decode_sign1(mutated)
    except MalformedInput:
        return
    with pytest.raises(InvalidSignature):
        verify_sign1(decoded, key.public_key())


_PROPERTY_KEY = generate_private_key()


def test_sign1_is_deterministic_rfc6979() -> None:
    from bastion.crypto import cose as _cose
    from bastion.crypto.keys import generate_private_key as _gen

    key = _gen()
    first = _cose.sign1(b"payload", key)
    assert first == _cose.sign1(b"payload", key)
    assert first != _cose.sign1(b"payload!", key)
    _cose.verify_sign1(_cose.decode_sign1(first), key.public_key())
