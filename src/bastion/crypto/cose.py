"""COSE_Sign1 with ES256 (RFC 9052 section 4.2, RFC 9053 section 2.1).

Messages are CBOR tag 18 wrapping ``[protected bstr, unprotected map, payload bstr,
signature bstr]``. The signature is the 64-byte ``r || s`` over
``Sig_structure = ["Signature1", protected, external_aad, payload]``.

The ``x5chain`` header (label 33, RFC 9360) carries the signer's certificate chain
(leaf first) in the protected header. Any ``crit`` header (label 2) naming a
label this module does not understand makes decoding fail.

STUB: the implementation is being written; signatures below are the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.crypto.keys import PrivateKey, PublicKey

__all__ = ["ALG_ES256", "HEADER_ALG", "HEADER_X5CHAIN", "Sign1Message", "decode_sign1", "sign1", "verify_sign1"]

HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
HEADER_X5CHAIN = 33
ALG_ES256 = -7
#: Default bound on an encoded COSE_Sign1 message.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sign1Message:
    """A decoded, not yet verified, COSE_Sign1 message."""

    protected_bytes: bytes
    protected: dict[int, Any]
    unprotected: dict[int, Any]
    payload: bytes
    signature: bytes
    x5chain: list[bytes] = field(default_factory=list)  # DER certificates, leaf first


def sign1(
    payload: bytes,
    key: PrivateKey,
    *,
    x5chain: Sequence[bytes] = (),
    content_type: int | str | None = None,
    external_aad: bytes = b"",
) -> bytes:
    """Sign ``payload`` and return a tagged (tag 18) COSE_Sign1 message."""
    raise NotImplementedError


def decode_sign1(data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> Sign1Message:
    """Decode a COSE_Sign1 message (tagged or untagged) without verifying it.

    Raises:
        MalformedInput: larger than ``max_size``, not CBOR, not a COSE_Sign1
            structure, ``alg`` is not ES256, or ``crit`` names an unknown label.
    """
    raise NotImplementedError


def verify_sign1(message: Sign1Message, key: PublicKey, *, external_aad: bytes = b"") -> None:
    """Verify the ES256 signature of a decoded message under ``key``.

    Raises:
        InvalidSignature: the signature does not verify.
    """
    raise NotImplementedError
