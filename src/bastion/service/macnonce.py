"""Stateless MAC-authenticated nonces, shared by attestation challenges and claim challenges.

A nonce is 32 bytes::

    random (16) || expiry (u32 big-endian, epoch seconds) || MAC (12)
    MAC = first 12 bytes of HMAC-SHA256(key, domain || binding || random || expiry)

Each user derives its own key from the master key with its own HKDF ``info``
and passes its own ``domain`` and ``binding`` (what the nonce is issued to), so
a nonce of one kind never verifies as the other: attestation uses
``b"bastion attestation challenge key v1"`` / ``b"bastion-challenge-v1"``, claims
``b"bastion claim challenge key v1"`` / ``b"bastion-claim-v1"``.

Example:
    >>> key = derive_key(bytes(32), b"example key v1")
    >>> nonce = make_nonce(key, b"example-v1", b"device", expiry=2_000_000_000)
    >>> read_nonce(key, b"example-v1", b"device", nonce).year
    2033
    >>> read_nonce(key, b"example-v1", b"another device", nonce) is None
    True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "NONCE_MAC_BYTES",
    "NONCE_RANDOM_BYTES",
    "derive_key",
    "expiry_after",
    "make_nonce",
    "nonce_mac",
    "read_nonce",
]

#: Random bytes at the start of a nonce (unpredictable, so it cannot be precomputed).
NONCE_RANDOM_BYTES = 16
#: The expiry field (u32 big-endian epoch seconds).
_EXPIRY = struct.Struct(">I")
#: Bytes of the truncated HMAC-SHA256 tag (96 bits: a forgery succeeds with p = 2**-96).
NONCE_MAC_BYTES = 12
#: Total size of a nonce (fits the monitor's 8..64-byte nonce bound).
NONCE_BYTES = NONCE_RANDOM_BYTES + _EXPIRY.size + NONCE_MAC_BYTES
#: Length of a derived nonce key.
KEY_BYTES = 32


def derive_key(master_key: bytes, info: bytes) -> bytes:
    """HKDF-SHA256(master key, info): every worker sharing the master key derives the same key."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master_key)


def nonce_mac(key: bytes, domain: bytes, binding: bytes, random: bytes, expiry: bytes) -> bytes:
    """The truncated MAC binding ``random`` and ``expiry`` to ``binding`` under ``domain``."""
    return hmac.new(key, domain + binding + random + expiry, hashlib.sha256).digest()[:NONCE_MAC_BYTES]


def expiry_after(now: dt.datetime, ttl: dt.timedelta) -> int:
    """``now + ttl`` in whole epoch seconds, rounded up (a nonce is valid for at least ``ttl``)."""
    moment = (now + ttl).timestamp()
    seconds = int(moment)
    return seconds if seconds >= moment else seconds + 1


def make_nonce(key: bytes, domain: bytes, binding: bytes, *, expiry: int) -> bytes:
    """A fresh nonce bound to ``binding``, expiring at ``expiry`` (epoch seconds)."""
    random = secrets.token_bytes(NONCE_RANDOM_BYTES)
    expiry_bytes = _EXPIRY.pack(expiry)
    return random + expiry_bytes + nonce_mac(key, domain, binding, random, expiry_bytes)


def read_nonce(key: bytes, domain: bytes, binding: bytes, nonce: bytes) -> dt.datetime | None:
    """The nonce's expiry if this key issued it under ``domain`` to ``binding``, else None.

    The expiry itself is the caller's to compare with its clock (each caller has its own error).
    """
    if len(nonce) != NONCE_BYTES:
        return None
    random = nonce[:NONCE_RANDOM_BYTES]
    expiry_bytes = nonce[NONCE_RANDOM_BYTES : NONCE_RANDOM_BYTES + _EXPIRY.size]
    tag = nonce[NONCE_RANDOM_BYTES + _EXPIRY.size :]
    if not hmac.compare_digest(tag, nonce_mac(key, domain, binding, random, expiry_bytes)):
        return None
    return dt.datetime.fromtimestamp(_EXPIRY.unpack(expiry_bytes)[0], dt.UTC)
