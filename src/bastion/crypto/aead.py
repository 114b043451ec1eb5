"""Authenticated encryption for secrets at rest (AES-256-GCM).

Used to keep tenant CA keys and online signing keys encrypted under the
service's master key. The associated data binds a ciphertext to its owner, so
a ciphertext moved to another row does not decrypt.

Layout of a sealed blob: ``b"BSE1" || nonce (12 bytes) || ciphertext+tag``.

Example:
    >>> key = bytes(32)
    >>> open_sealed(key, seal(key, b"secret", aad=b"tenant:1"), aad=b"tenant:1")
    b'secret'
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.crypto.errors import InvalidSignature, MalformedInput

__all__ = ["MASTER_KEY_SIZE", "open_sealed", "seal"]

MASTER_KEY_SIZE = 32
_MAGIC = b"BSE1"
_NONCE_SIZE = 12
#: Sealed secrets are keys and small blobs; this bounds the input to open.
MAX_SEALED_BYTES = 1 << 20


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` under a 32-byte key, bound to ``aad``."""
    if len(key) != MASTER_KEY_SIZE:
        raise MalformedInput(f"master key must be {MASTER_KEY_SIZE} bytes")
    nonce = os.urandom(_NONCE_SIZE)
    return _MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """Decrypt a blob made by :func:`seal`.

    Raises:
        MalformedInput: the blob is not a sealed blob, or too large.
        InvalidSignature: wrong key, wrong ``aad``, or the blob was modified.
    """
    if len(key) != MASTER_KEY_SIZE:
        raise MalformedInput(f"master key must be {MASTER_KEY_SIZE} bytes")
    if len(blob) > MAX_SEALED_BYTES or len(blob) < len(_MAGIC) + _NONCE_SIZE + 16:
        raise MalformedInput("sealed blob has an impossible size")
    if blob[: len(_MAGIC)] != _MAGIC:
        raise MalformedInput("not a sealed blob (bad magic)")
    nonce = blob[len(_MAGIC) : len(_MAGIC) + _NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(_MAGIC) + _NONCE_SIZE :], aad)
    except InvalidTag as exc:
        raise InvalidSignature("sealed blob does not authenticate under this key") from exc
