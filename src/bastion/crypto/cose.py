"""COSE_Sign1 with ES256 (RFC 9052 section 4.2, RFC 9053 section 2.1).

Messages are CBOR tag 18 wrapping ``[protected bstr, unprotected map, payload bstr,
signature bstr]``. The signature is the 64-byte ``r || s`` over
``Sig_structure = ["Signature1", protected, external_aad, payload]``.

The ``x5chain`` header (label 33, RFC 9360) carries the signer's certificate chain
(leaf first) in the protected header. Any ``crit`` header (label 2) naming a
label this module does not understand makes decoding fail.

Example:
    >>> from bastion.crypto.keys import generate_private_key
    >>> key = generate_private_key()
    >>> msg = decode_sign1(sign1(b"hello", key))
    >>> verify_sign1(msg, key.public_key())
    >>> msg.payload
    b'hello'
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.keys import PrivateKey, PublicKey

__all__ = [
    "ALG_ES256",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "HEADER_ALG",
    "HEADER_CONTENT_TYPE",
    "HEADER_CRIT",
    "HEADER_KID",
    "HEADER_X5CHAIN",
    "MAX_X5CHAIN_CERTS",
    "Sign1Message",
    "cbor_loads_exact",
    "decode_sign1",
    "sign1",
    "verify_sign1",
]

HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
HEADER_X5CHAIN = 33
ALG_ES256 = -7
#: CBOR tag of a COSE_Sign1 message (RFC 9052 section 2).
COSE_SIGN1_TAG = 18
#: Default bound on an encoded COSE_Sign1 message.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
#: Bound on the number of certificates in an ``x5chain`` header.
MAX_X5CHAIN_CERTS = 4
#: Header labels this module understands; ``crit`` may name only these.
UNDERSTOOD_LABELS = frozenset({HEADER_ALG, HEADER_CRIT, HEADER_CONTENT_TYPE, HEADER_KID, HEADER_X5CHAIN})
_P256_SCALAR_BYTES = 32
_ES256_SIGNATURE_BYTES = 2 * _P256_SCALAR_BYTES

# cbor2 signals bad input with CBORDecodeError (a ValueError) but can also let
# lower-level errors through on hostile input; all of them mean "malformed".
_CBOR_ERRORS = (
    cbor2.CBORDecodeError,
    ValueError,  # e.g. integer-string conversion limit on huge bignums
    TypeError,
    ArithmeticError,  # decimal.Overflow / InvalidOperation from tags 4 and 5
    LookupError,
    RecursionError,
    MemoryError,
    EOFError,
)


@dataclass(frozen=True)
class Sign1Message:
    """A decoded, not yet verified, COSE_Sign1 message."""

    protected_bytes: bytes
    protected: dict[int, Any]
    unprotected: dict[int, Any]
    payload: bytes
    signature: bytes
    x5chain: list[bytes] = field(default_factory=list)  # DER certificates, leaf first


def cbor_loads_exact(data: bytes) -> Any:
    """Decode exactly one CBOR data item from ``data``; trailing bytes are an error.

    Raises:
        MalformedInput: not well-formed CBOR, or bytes follow the first item.
    """
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except _CBOR_ERRORS as exc:
        raise MalformedInput("not well-formed CBOR") from exc
    if stream.tell() != len(data):
        raise MalformedInput("trailing bytes after the CBOR data item")
    return value


def _sig_structure(protected_bytes: bytes, external_aad: bytes, payload: bytes) -> bytes:
    # RFC 9052 section 4.4: Sig_structure for a COSE_Sign1.
    return cbor2.dumps(["Signature1", protected_bytes, external_aad, payload])


def sign1(
    payload: bytes,
    key: PrivateKey,
    *,
    x5chain: Sequence[bytes] = (),
    content_type: int | str | None = None,
    kid: bytes | None = None,
    external_aad: bytes = b"",
) -> bytes:
    """Sign ``payload`` and return a tagged (tag 18) COSE_Sign1 message.

    Args:
        payload: the bytes to sign (carried in the message).
        key: a P-256 private key.
        x5chain: DER certificates, leaf first, put in the protected header
            (a single bstr for one certificate, else an array, per RFC 9360).
        content_type: optional ``content type`` (label 3), protected.
        kid: optional key identifier (label 4, RFC 9052 section 3.1), protected.
        external_aad: externally supplied data bound into the signature.

    The signature is deterministic (RFC 6979).
    """
    if not isinstance(key.curve, ec.SECP256R1):
        raise MalformedInput("ES256 needs a P-256 key")
    protected: dict[int, Any] = {HEADER_ALG: ALG_ES256}
    if content_type is not None:
        protected[HEADER_CONTENT_TYPE] = content_type
    if kid is not None:
        protected[HEADER_KID] = bytes(kid)
    if len(x5chain) == 1:
        protected[HEADER_X5CHAIN] = bytes(x5chain[0])
    elif x5chain:
        protected[HEADER_X5CHAIN] = [bytes(c) for c in x5chain]
    protected_bytes = cbor2.dumps(protected, canonical=True)
    # RFC 6979 deterministic ECDSA: the same key and input give the same message, so
    # image builds are reproducible, and signing needs no fresh randomness.
    der = key.sign(
        _sig_structure(protected_bytes, external_aad, payload),
        ec.ECDSA(hashes.SHA256(), deterministic_signing=True),
    )
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(_P256_SCALAR_BYTES, "big") + s.to_bytes(_P256_SCALAR_BYTES, "big")
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bytes, {}, payload, signature]))


def _header_map(value: Any, where: str) -> dict[int, Any]:
    if not isinstance(value, dict):
        raise MalformedInput(f"{where} header is not a map")
    for label in value:
        # RFC 9052 section 3: labels are int or tstr.
        if isinstance(label, bool) or not isinstance(label, int | str):
            raise MalformedInput(f"{where} header has a label that is neither int nor tstr")
    return value


def _parse_x5chain(value: Any) -> list[bytes]:
    # RFC 9360 section 2: a single bstr, or an array of two or more bstr.
    if isinstance(value, bytes):
        chain = [value]
    elif isinstance(value, list) and len(value) >= 2 and all(isinstance(c, bytes) for c in value):
        chain = list(value)
    else:
        raise MalformedInput("x5chain must be a bstr or an array of two or more bstr")
    if len(chain) > MAX_X5CHAIN_CERTS:
        raise MalformedInput(f"x5chain has more than {MAX_X5CHAIN_CERTS} certificates")
    if any(not c for c in chain):
        raise MalformedInput("x5chain has an empty certificate")
    return chain


def _check_crit(protected: dict[int, Any]) -> None:
    # RFC 9052 section 3.1: crit is a non-empty array of labels that must be
    # present in the protected header and understood by the recipient.
    crit = protected[HEADER_CRIT]
    if not isinstance(crit, list) or not crit:
        raise MalformedInput("crit must be a non-empty array")
    for label in crit:
        if isinstance(label, bool) or not isinstance(label, int | str):
            raise MalformedInput("crit names a label that is neither int nor tstr")
        if label not in UNDERSTOOD_LABELS or label == HEADER_CRIT:
            raise MalformedInput("crit names a header label this implementation does not understand")
        if label not in protected:
            raise MalformedInput("crit names a label that is not in the protected header")


def decode_sign1(data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> Sign1Message:
    """Decode a COSE_Sign1 message (tagged or untagged) without verifying it.

    Raises:
        MalformedInput: larger than ``max_size``, not CBOR, not a COSE_Sign1
            structure, ``alg`` is not ES256, or ``crit`` names an unknown label.
    """
    if len(data) > max_size:
        raise MalformedInput(f"COSE_Sign1 message is larger than {max_size} bytes")
    item = cbor_loads_exact(data)
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise MalformedInput("CBOR tag is not COSE_Sign1 (18)")
        item = item.value
    if not isinstance(item, list) or len(item) != 4:
        raise MalformedInput("COSE_Sign1 must be an array of four elements")
    protected_bytes, unprotected_raw, payload, signature = item
    if not isinstance(protected_bytes, bytes):
        raise MalformedInput("protected header must be a bstr")
    # RFC 9052 section 3: a zero-length bstr stands for an empty protected map.
    protected = _header_map(cbor_loads_exact(protected_bytes), "protected") if protected_bytes else {}
    unprotected = _header_map(unprotected_raw, "unprotected")
    if not isinstance(payload, bytes):
        raise MalformedInput("payload must be a bstr (detached payloads are not supported)")
    if not isinstance(signature, bytes) or len(signature) != _ES256_SIGNATURE_BYTES:
        raise MalformedInput(f"ES256 signature must be a {_ES256_SIGNATURE_BYTES}-byte bstr")
    # RFC 9052 section 3: a label must not appear in both buckets.
    if set(protected) & set(unprotected):
        raise MalformedInput("a header label appears in both the protected and unprotected maps")
    if HEADER_CRIT in unprotected:
        raise MalformedInput("crit must be in the protected header")
    if HEADER_CRIT in protected:
        _check_crit(protected)
    alg = protected.get(HEADER_ALG, unprotected.get(HEADER_ALG))
    if isinstance(alg, bool) or alg != ALG_ES256:
        raise MalformedInput("alg must be ES256 (-7)")
    if HEADER_X5CHAIN in unprotected:
        raise MalformedInput("x5chain is accepted only in the protected header")
    x5chain = _parse_x5chain(protected[HEADER_X5CHAIN]) if HEADER_X5CHAIN in protected else []
    return Sign1Message(
        protected_bytes=protected_bytes,
        protected=protected,
        unprotected=unprotected,
        payload=payload,
        signature=signature,
        x5chain=x5chain,
    )


def verify_sign1(message: Sign1Message, key: PublicKey, *, external_aad: bytes = b"") -> None:
    """Verify the ES256 signature of a decoded message under ``key``.

    The Sig_structure is rebuilt from the protected header bytes as received,
    never from a re-encoding of the decoded map (an empty protected map is the
    zero-length bstr, RFC 9052 section 3).

    Raises:
        InvalidSignature: the signature does not verify (or the key is not P-256).
    """
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidSignature("ES256 verification needs a P-256 public key")
    if len(message.signature) != _ES256_SIGNATURE_BYTES:
        raise InvalidSignature("ES256 signature has the wrong length")
    r = int.from_bytes(message.signature[:_P256_SCALAR_BYTES], "big")
    s = int.from_bytes(message.signature[_P256_SCALAR_BYTES:], "big")
    # RFC 9052 section 3: recipients accept h'' and h'a0' for an empty protected
    # map, and the zero-length bstr is "the version used in the serialization
    # structures for cryptographic computation". Any non-empty header is used
    # exactly as received.
    protected_bytes = message.protected_bytes if message.protected else b""
    tbs = _sig_structure(protected_bytes, external_aad, message.payload)
    try:
        key.verify(encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA256()))
    except _CryptographyInvalidSignature as exc:
        raise InvalidSignature("COSE_Sign1 signature does not verify") from exc
