"""Fuzz key loading (:mod:`bastion.crypto.keys`): SEC1 points and PEM keys.

These parse device-supplied keys (the key to certify, developer keys) and
operator-supplied files (publisher and signing keys).

Documented error: :class:`MalformedInput`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto import keys
from bastion.crypto.errors import MalformedInput

_KEY = ec.derive_private_key(0xB457_5001, ec.SECP256R1())
SEEDS: list[bytes] = [
    keys.public_key_bytes(_KEY.public_key()),
    keys.public_key_pem(_KEY.public_key()),
    keys.private_key_pem(_KEY),
]


def test_one_input(data: bytes) -> None:
    """Load ``data`` as a SEC1 point, a public PEM and a private PEM."""
    for loader in (keys.load_public_key_bytes, keys.load_public_key_pem, keys.load_private_key_pem):
        try:
            loader(data)
        except MalformedInput:
            continue
