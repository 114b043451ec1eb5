"""Exceptions raised by :mod:`bastion.crypto`.

The tree::

    CryptoError
    ├── MalformedInput        bytes that cannot be decoded: too large, bad CBOR/DER,
    │                         wrong types, unknown critical content
    ├── InvalidSignature      a signature that does not verify
    └── CertificateError      a certificate or chain that breaks the DICE profile,
                              is outside its validity window, or is not issued by
                              the expected issuer

Every error carries a human-readable message that names the problem; none
carries key material.
"""

from __future__ import annotations

__all__ = ["CertificateError", "CryptoError", "InvalidSignature", "MalformedInput"]


class CryptoError(Exception):
    """Root of all errors raised by :mod:`bastion.crypto`."""


class MalformedInput(CryptoError):  # noqa: N818 - contract name, reads as a noun phrase
    """Input bytes could not be decoded within the profile and size bounds."""


class InvalidSignature(CryptoError):  # noqa: N818 - mirrors cryptography.exceptions.InvalidSignature
    """A signature did not verify under the given public key."""


class CertificateError(CryptoError):
    """A certificate or chain failed validation.

    Attributes:
        reason: a stable, machine-readable name of the failed check (for
            example ``"expired"``, ``"bad_signature"``, ``"not_ca"``); see
            :mod:`bastion.crypto.certs` for the list. Callers may record it;
            the message is for people.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason
