"""Entity Attestation Tokens (RFC 9711) as CWTs (RFC 8392) in COSE_Sign1.

Bastion's EAT profile, ``tag:bastion.dev,2026:eat/v1`` (claim ``eat_profile``, 265):

====================  =========  ==============================================
claim                 key        value
====================  =========  ==============================================
iat                   6          int, seconds since the epoch
eat_nonce             10         bstr, 8..64 bytes (RFC 9711 4.1)
ueid                  256        bstr, 33 bytes, RAND type (0x01 || SHA-256)
oemboot ("secboot")   262        bool: the boot chain verified every stage
dbgstat               263        uint: 0 enabled, 1 disabled, 2 disabled since
                                 boot, 3 permanently disabled, 4 fully and
                                 permanently disabled (RFC 9711 4.2.9)
eat_profile           265        tstr, the profile above
swname                270        tstr
swversion             271        [tstr, 1] (version, scheme 1 = multipartnumeric)
measurements          273        [[content-format uint, bstr]]: one CBOR-encoded
                                 ``{"component": tstr, "alg": "sha-256",
                                 "digest": bstr}`` per stage, boot order
boot slot             -70001     tstr "A" or "B"     (private, RFC 8392 < -65536)
rollback counters     -70002     {tstr: uint}        (private)
installed apps        -70003     [{ "id": tstr, "version": tstr }] (private)
key to certify        -70004     bstr, SEC1 uncompressed P-256 point (private)
====================  =========  ==============================================

Decoding is strict: the encoded claims set has a size bound, every claim above is
type-checked, and any claim key not in this table is rejected.

STUB: the implementation is being written; signatures below are the contract.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastion.crypto.cose import Sign1Message
from bastion.crypto.keys import PrivateKey

__all__ = [
    "EAT_PROFILE",
    "DebugStatus",
    "EatClaims",
    "InstalledApp",
    "Measurement",
    "decode_claims",
    "decode_eat",
    "encode_claims",
    "sign_eat",
]

EAT_PROFILE = "tag:bastion.dev,2026:eat/v1"
#: Default bound on an encoded EAT (COSE_Sign1 with a two-certificate x5chain).
DEFAULT_MAX_EAT_BYTES = 16 * 1024
#: Bounds on list-valued claims.
MAX_MEASUREMENTS = 16
MAX_INSTALLED_APPS = 64
MAX_COUNTERS = 16


class DebugStatus(enum.IntEnum):
    """RFC 9711 section 4.2.9 debug status."""

    ENABLED = 0
    DISABLED = 1
    DISABLED_SINCE_BOOT = 2
    DISABLED_PERMANENTLY = 3
    DISABLED_FULLY_AND_PERMANENTLY = 4


@dataclass(frozen=True)
class Measurement:
    """The SHA-256 digest of one boot stage (component is e.g. "bootloader", "os")."""

    component: str
    digest: bytes


@dataclass(frozen=True)
class InstalledApp:
    """An app installed on the device."""

    component_id: str
    version: str


@dataclass(frozen=True)
class EatClaims:
    """The claims of a Bastion EAT."""

    nonce: bytes
    ueid: bytes
    secboot: bool
    dbgstat: DebugStatus
    measurements: tuple[Measurement, ...]
    swname: str
    swversion: str
    boot_slot: str
    rollback_counters: dict[str, int]
    key_to_certify: bytes
    iat: int
    installed_apps: tuple[InstalledApp, ...] = field(default_factory=tuple)


def encode_claims(claims: EatClaims) -> bytes:
    """Encode a claims set as a deterministic CBOR map (RFC 8949 4.2.1)."""
    raise NotImplementedError


def decode_claims(data: bytes, *, max_size: int = DEFAULT_MAX_EAT_BYTES) -> EatClaims:
    """Decode and type-check a claims set.

    Raises:
        MalformedInput: too large, not a CBOR map, a claim of the wrong type or
            outside its bounds, a missing claim, an unknown claim, or the wrong
            ``eat_profile``.
    """
    raise NotImplementedError


def sign_eat(claims: EatClaims, key: PrivateKey, *, x5chain: Sequence[bytes]) -> bytes:
    """Return the EAT: COSE_Sign1 (ES256) over the encoded claims, with ``x5chain``."""
    raise NotImplementedError


def decode_eat(token: bytes, *, max_size: int = DEFAULT_MAX_EAT_BYTES) -> tuple[Sign1Message, EatClaims]:
    """Decode an EAT without verifying its signature or chain.

    The caller verifies the chain, then the signature with
    :func:`bastion.crypto.cose.verify_sign1`, before trusting any claim.

    Raises:
        MalformedInput: as :func:`decode_sign1` and :func:`decode_claims`, or the
            message has no ``x5chain``.
    """
    raise NotImplementedError
