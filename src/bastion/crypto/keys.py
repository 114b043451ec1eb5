"""P-256 keys: generation, encoding and the device ID.

Example:
    >>> key = generate_private_key()
    >>> len(public_key_bytes(key.public_key()))
    65
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto.errors import MalformedInput

__all__ = [
    "PrivateKey",
    "PublicKey",
    "device_id_from_public_key",
    "generate_private_key",
    "load_private_key_pem",
    "load_public_key_bytes",
    "load_public_key_pem",
    "private_key_pem",
    "public_key_bytes",
    "public_key_pem",
    "ueid_from_public_key",
]

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey

#: RFC 9711 section 4.2.1: UEID type byte for a RAND-type identifier.
UEID_TYPE_RAND = 0x01
#: A bound on PEM inputs; a P-256 key in PEM is well under 1 KiB.
MAX_PEM_BYTES = 8192


def generate_private_key() -> PrivateKey:
    """Return a fresh random P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_bytes(key: PublicKey) -> bytes:
    """Return the 65-byte SEC1 uncompressed encoding of a P-256 public key."""
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def load_public_key_bytes(data: bytes) -> PublicKey:
    """Load a P-256 public key from its SEC1 uncompressed encoding.

    Raises:
        MalformedInput: the bytes are not a valid point on P-256.
    """
    if len(data) != 65 or data[0] != 0x04:
        raise MalformedInput("public key must be a 65-byte uncompressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
    except ValueError as exc:
        raise MalformedInput("public key is not a point on P-256") from exc


def device_id_from_public_key(key: PublicKey) -> str:
    """Return the device ID: lowercase hex SHA-256 of the DeviceID public key (SEC1)."""
    return hashlib.sha256(public_key_bytes(key)).hexdigest()


def ueid_from_public_key(key: PublicKey) -> bytes:
    """Return the 33-byte RAND-type UEID (RFC 9711 4.2.1) for a DeviceID public key."""
    return bytes([UEID_TYPE_RAND]) + hashlib.sha256(public_key_bytes(key)).digest()


def private_key_pem(key: PrivateKey) -> bytes:
    """Return the unencrypted PKCS#8 PEM of a private key (callers store it 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PublicKey) -> bytes:
    """Return the SubjectPublicKeyInfo PEM of a public key."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key_pem(data: bytes) -> PrivateKey:
    """Load a P-256 private key from PKCS#8 or SEC1 PEM.

    Raises:
        MalformedInput: not a PEM P-256 private key, or larger than the bound.
    """
    if len(data) > MAX_PEM_BYTES:
        raise MalformedInput(f"private key PEM is larger than {MAX_PEM_BYTES} bytes")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # an unknown key type or curve (fuzz_keys)
        raise MalformedInput("not a PEM private key (or it is password-protected)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedInput("private key is not a P-256 key")
    return key


def load_public_key_pem(data: bytes) -> PublicKey:
    """Load a P-256 public key from SubjectPublicKeyInfo PEM.

    Raises:
        MalformedInput: not a PEM P-256 public key, or larger than the bound.
    """
    if len(data) > MAX_PEM_BYTES:
        raise MalformedInput(f"public key PEM is larger than {MAX_PEM_BYTES} bytes")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # an unknown key type or curve (fuzz_keys)
        raise MalformedInput("not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedInput("public key is not a P-256 key")
    return key
