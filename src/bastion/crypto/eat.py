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
insecure no sandbox   -70006     true: the device runs its OS and apps without
                                 sandboxes (``--insecure-no-sandbox``);
                                 OPTIONAL, present only when true (private)
device capability     -70010     bstr, 1..4096 bytes: the capability file the
                                 device runs under (``appDevelopment`` or
                                 ``fieldServicing``); OPTIONAL, absent when the
                                 device has none (private)
====================  =========  ==============================================

Decoding is strict: the encoded claims set has a size bound, every claim above is
type-checked, and any claim key not in this table is rejected. Every claim is
required except the optional ones, which are encoded only when set: an
explicit ``false`` for "insecure no sandbox" is rejected, so that every
accepted token is what :func:`encode_claims` writes for its claims.

Decoded claims must also be in deterministic encoding (RFC 8949 section 4.2, as
produced by :func:`encode_claims`): the decoder re-encodes what it read (the
claims map, and each measurement body) and rejects any difference. This closes
duplicate map keys, non-minimal lengths, indefinite-length items and tags, so
every accepted token has exactly one meaning. Every claim key and every integer
value must be a CBOR integer (never a float or bool that compares equal), so
the re-encoding of an accepted map is exactly what :func:`encode_claims` writes
for the decoded claims.

Example:
    >>> claims = EatClaims(
    ...     nonce=bytes(16), ueid=b"\\x01" + bytes(32), secboot=True,
    ...     dbgstat=DebugStatus.DISABLED_PERMANENTLY,
    ...     measurements=(Measurement("os", bytes(32)),), swname="bastion-os",
    ...     swversion="1.0.0", boot_slot="A", rollback_counters={"os": 1},
    ...     key_to_certify=b"\\x04" + bytes(64), iat=0)
    >>> decode_claims(encode_claims(claims), verify_key_point=False) == claims
    True
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from bastion.crypto.cose import Sign1Message, cbor_loads_exact, decode_sign1, sign1
from bastion.crypto.errors import MalformedInput
from bastion.crypto.keys import PrivateKey, load_public_key_bytes

__all__ = [
    "DEFAULT_MAX_EAT_BYTES",
    "EAT_PROFILE",
    "MAX_CAPABILITY_BYTES",
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
#: Bound on every text value (names, versions, component IDs), in characters.
MAX_TEXT_LEN = 128
#: Largest accepted integer for ``iat`` and rollback counters (fits a signed 64-bit column).
MAX_UINT = 2**63 - 1
#: RFC 9711 section 4.1: eat_nonce is 8 to 64 bytes.
NONCE_MIN_BYTES = 8
NONCE_MAX_BYTES = 64
#: RFC 9711 section 4.2.1: RAND-type UEID, type byte 0x01 then 32 bytes.
UEID_BYTES = 33
UEID_TYPE_RAND = 0x01
#: SEC1 uncompressed P-256 point.
KEY_POINT_BYTES = 65
#: Bound on the device capability claim (a capability file, bastion.images.capability).
MAX_CAPABILITY_BYTES = 4096
SHA256_BYTES = 32
MEASUREMENT_ALG = "sha-256"
#: CoAP content-format of a measurement entry: application/cbor (RFC 7049 / IANA 60).
CONTENT_FORMAT_CBOR = 60
#: CoSWID version scheme "multipartnumeric" (RFC 9393 section 4.1).
VERSION_SCHEME_MULTIPARTNUMERIC = 1
BOOT_SLOTS = frozenset({"A", "B"})

# Claim keys (RFC 8392, RFC 9711 IANA registrations, and private-use keys).
CLAIM_IAT = 6
CLAIM_NONCE = 10
CLAIM_UEID = 256
CLAIM_OEMBOOT = 262
CLAIM_DBGSTAT = 263
CLAIM_PROFILE = 265
CLAIM_SWNAME = 270
CLAIM_SWVERSION = 271
CLAIM_MEASUREMENTS = 273
CLAIM_BOOT_SLOT = -70001
CLAIM_ROLLBACK_COUNTERS = -70002
CLAIM_INSTALLED_APPS = -70003
CLAIM_KEY_TO_CERTIFY = -70004
CLAIM_INSECURE_NO_SANDBOX = -70006
CLAIM_CAPABILITY = -70010
_REQUIRED_CLAIMS = frozenset(
    {
        CLAIM_IAT,
        CLAIM_NONCE,
        CLAIM_UEID,
        CLAIM_OEMBOOT,
        CLAIM_DBGSTAT,
        CLAIM_PROFILE,
        CLAIM_SWNAME,
        CLAIM_SWVERSION,
        CLAIM_MEASUREMENTS,
        CLAIM_BOOT_SLOT,
        CLAIM_ROLLBACK_COUNTERS,
        CLAIM_INSTALLED_APPS,
        CLAIM_KEY_TO_CERTIFY,
    }
)
_OPTIONAL_CLAIMS = frozenset({CLAIM_INSECURE_NO_SANDBOX, CLAIM_CAPABILITY})
_KNOWN_CLAIMS = _REQUIRED_CLAIMS | _OPTIONAL_CLAIMS


class DebugStatus(enum.IntEnum):
    """RFC 9711 section 4.2.9 debug status."""

    ENABLED = 0
    DISABLED = 1
    DISABLED_SINCE_BOOT = 2
    DISABLED_PERMANENTLY = 3
    DISABLED_FULLY_AND_PERMANENTLY = 4


_DBGSTAT_MAX = max(DebugStatus)
#: CBOR major type 4 (array) with the count in the initial byte (counts 0..23).
_CBOR_ARRAY = 0x80
#: The deterministic-encoding check relies on a one-byte array head.
assert MAX_MEASUREMENTS + 1 < 24  # noqa: S101 - a static invariant of the constants above


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
    """The claims of a Bastion EAT.

    ``insecure_no_sandbox`` is true when the device runs its OS and apps
    without their sandboxes (the service may refuse such a device a
    production certificate).
    """

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
    insecure_no_sandbox: bool = False
    #: The device capability file the device runs under, or None (development mode is off).
    capability: bytes | None = None


def _encode_measurement(m: Measurement) -> list[Any]:
    body = cbor2.dumps({"component": m.component, "alg": MEASUREMENT_ALG, "digest": m.digest}, canonical=True)
    return [CONTENT_FORMAT_CBOR, body]


def encode_claims(claims: EatClaims) -> bytes:
    """Encode a claims set as a deterministic CBOR map (RFC 8949 4.2.1).

    The values are not range-checked here; :func:`decode_claims` (which the
    verifier runs) is the single place that enforces the profile.
    """
    claims_map: dict[int, Any] = {
        CLAIM_IAT: claims.iat,
        CLAIM_NONCE: claims.nonce,
        CLAIM_UEID: claims.ueid,
        CLAIM_OEMBOOT: claims.secboot,
        CLAIM_DBGSTAT: int(claims.dbgstat),
        CLAIM_PROFILE: EAT_PROFILE,
        CLAIM_SWNAME: claims.swname,
        CLAIM_SWVERSION: [claims.swversion, VERSION_SCHEME_MULTIPARTNUMERIC],
        CLAIM_MEASUREMENTS: [_encode_measurement(m) for m in claims.measurements],
        CLAIM_BOOT_SLOT: claims.boot_slot,
        CLAIM_ROLLBACK_COUNTERS: dict(claims.rollback_counters),
        CLAIM_INSTALLED_APPS: [{"id": a.component_id, "version": a.version} for a in claims.installed_apps],
        CLAIM_KEY_TO_CERTIFY: claims.key_to_certify,
    }
    if claims.insecure_no_sandbox:
        claims_map[CLAIM_INSECURE_NO_SANDBOX] = True
    if claims.capability is not None:
        claims_map[CLAIM_CAPABILITY] = claims.capability
    return cbor2.dumps(claims_map, canonical=True)


# --- strict decoding helpers -------------------------------------------------


def _text(value: Any, what: str, *, min_len: int = 1) -> str:
    if not isinstance(value, str) or not min_len <= len(value) <= MAX_TEXT_LEN:
        raise MalformedInput(f"{what} must be a text string of {min_len}..{MAX_TEXT_LEN} characters")
    return value


def _uint(value: Any, what: str, *, maximum: int = MAX_UINT) -> int:
    # bool is an int in Python; CBOR true/false is not a number.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise MalformedInput(f"{what} must be an unsigned integer <= {maximum}")
    return value


def _bstr(value: Any, what: str, *, min_len: int, max_len: int) -> bytes:
    if not isinstance(value, bytes) or not min_len <= len(value) <= max_len:
        raise MalformedInput(f"{what} must be a byte string of {min_len}..{max_len} bytes")
    return value


def _array(value: Any, what: str, *, max_len: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > max_len:
        raise MalformedInput(f"{what} must be an array of at most {max_len} entries")
    return value


def _decode_measurement(entry: Any, bodies: list[Any]) -> Measurement:
    # RFC 9711 section 4.2.16: measurements-format = [content-type, content-format]
    if not isinstance(entry, list) or len(entry) != 2:
        raise MalformedInput("a measurement must be [content-format, bstr]")
    if type(entry[0]) is not int or entry[0] != CONTENT_FORMAT_CBOR:
        raise MalformedInput("measurement content-format must be 60 (application/cbor)")
    if not isinstance(entry[1], bytes):
        raise MalformedInput("measurement body must be a bstr")
    body = cbor_loads_exact(entry[1])
    if not isinstance(body, dict) or set(body) != {"component", "alg", "digest"}:
        raise MalformedInput('measurement body must be {"component", "alg", "digest"}')
    if body["alg"] != MEASUREMENT_ALG:
        raise MalformedInput(f"measurement alg must be {MEASUREMENT_ALG!r}")
    # The body is a nested CBOR item: decode_claims checks that it is deterministic.
    bodies.append(body)
    return Measurement(
        component=_text(body["component"], "measurement component"),
        digest=_bstr(body["digest"], "measurement digest", min_len=SHA256_BYTES, max_len=SHA256_BYTES),
    )


def _decode_counters(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > MAX_COUNTERS:
        raise MalformedInput(f"rollback counters must be a map of at most {MAX_COUNTERS} entries")
    return {_text(k, "rollback counter name"): _uint(v, "rollback counter") for k, v in value.items()}


def _decode_app(value: Any) -> InstalledApp:
    if not isinstance(value, dict) or set(value) != {"id", "version"}:
        raise MalformedInput('an installed app must be {"id", "version"}')
    return InstalledApp(component_id=_text(value["id"], "app id"), version=_text(value["version"], "app version"))


def _decode_swversion(value: Any) -> str:
    if not isinstance(value, list) or len(value) != 2 or type(value[1]) is not int:
        raise MalformedInput("swversion must be [tstr, 1]")
    if value[1] != VERSION_SCHEME_MULTIPARTNUMERIC:
        raise MalformedInput("swversion must be [tstr, 1]")
    return _text(value[0], "swversion")


def _claims_from_map(claims_map: dict[Any, Any], bodies: list[Any], *, verify_key_point: bool) -> EatClaims:
    # Exact ints: a float key such as 6.0 compares (and hashes) equal to 6.
    if any(type(key) is not int for key in claims_map):
        raise MalformedInput("every claim key must be an integer")
    unknown = set(claims_map) - _KNOWN_CLAIMS
    if unknown:
        raise MalformedInput("the claims set has a claim outside the Bastion EAT profile")
    missing = _REQUIRED_CLAIMS - set(claims_map)
    if missing:
        raise MalformedInput(f"the claims set lacks required claims {sorted(missing)}")
    if claims_map[CLAIM_PROFILE] != EAT_PROFILE:
        raise MalformedInput(f"eat_profile must be {EAT_PROFILE!r}")
    ueid = _bstr(claims_map[CLAIM_UEID], "ueid", min_len=UEID_BYTES, max_len=UEID_BYTES)
    if ueid[0] != UEID_TYPE_RAND:
        raise MalformedInput("ueid must be a RAND-type UEID (type byte 0x01)")
    secboot = claims_map[CLAIM_OEMBOOT]
    if not isinstance(secboot, bool):
        raise MalformedInput("oemboot must be a bool")
    dbgstat = _uint(claims_map[CLAIM_DBGSTAT], "dbgstat", maximum=_DBGSTAT_MAX)
    boot_slot = claims_map[CLAIM_BOOT_SLOT]
    if not isinstance(boot_slot, str) or boot_slot not in BOOT_SLOTS:
        raise MalformedInput('boot slot must be "A" or "B"')
    key = _bstr(claims_map[CLAIM_KEY_TO_CERTIFY], "key to certify", min_len=KEY_POINT_BYTES, max_len=KEY_POINT_BYTES)
    if verify_key_point:
        load_public_key_bytes(key)  # raises MalformedInput if not a P-256 point
    measurements = _array(claims_map[CLAIM_MEASUREMENTS], "measurements", max_len=MAX_MEASUREMENTS)
    if not measurements:
        raise MalformedInput("measurements must not be empty")
    apps = _array(claims_map[CLAIM_INSTALLED_APPS], "installed apps", max_len=MAX_INSTALLED_APPS)
    # Optional claims are present only when set: one meaning per token (an explicit false is refused).
    insecure = CLAIM_INSECURE_NO_SANDBOX in claims_map
    if insecure and claims_map[CLAIM_INSECURE_NO_SANDBOX] is not True:
        raise MalformedInput("insecure no sandbox, when present, must be true")
    capability = claims_map.get(CLAIM_CAPABILITY)
    if capability is not None:
        capability = _bstr(capability, "device capability", min_len=1, max_len=MAX_CAPABILITY_BYTES)
    return EatClaims(
        nonce=_bstr(claims_map[CLAIM_NONCE], "eat_nonce", min_len=NONCE_MIN_BYTES, max_len=NONCE_MAX_BYTES),
        ueid=ueid,
        secboot=secboot,
        dbgstat=DebugStatus(dbgstat),
        measurements=tuple(_decode_measurement(m, bodies) for m in measurements),
        swname=_text(claims_map[CLAIM_SWNAME], "swname"),
        swversion=_decode_swversion(claims_map[CLAIM_SWVERSION]),
        boot_slot=boot_slot,
        rollback_counters=_decode_counters(claims_map[CLAIM_ROLLBACK_COUNTERS]),
        key_to_certify=key,
        iat=_uint(claims_map[CLAIM_IAT], "iat"),
        installed_apps=tuple(_decode_app(a) for a in apps),
        insecure_no_sandbox=insecure,
        capability=capability,
    )


def decode_claims(data: bytes, *, max_size: int = DEFAULT_MAX_EAT_BYTES, verify_key_point: bool = True) -> EatClaims:
    """Decode and type-check a claims set.

    Args:
        data: the encoded claims set (the COSE_Sign1 payload).
        max_size: bound on ``len(data)``.
        verify_key_point: check that the key to certify is a point on P-256.

    Raises:
        MalformedInput: too large, not a CBOR map, a claim of the wrong type or
            outside its bounds, a missing claim, an unknown claim, the wrong
            ``eat_profile``, or not in deterministic encoding.
    """
    if len(data) > max_size:
        raise MalformedInput(f"the claims set is larger than {max_size} bytes")
    claims_map = cbor_loads_exact(data)
    if not isinstance(claims_map, dict):
        raise MalformedInput("the claims set is not a CBOR map")
    bodies: list[Any] = []
    claims = _claims_from_map(claims_map, bodies, verify_key_point=verify_key_point)
    # RFC 8949 section 4.2: one meaning per token. A re-encoding that differs
    # reveals duplicate keys, non-minimal or indefinite lengths, or tags. The
    # claims map and each measurement body (a nested CBOR item) are re-encoded
    # as decoded; with the exact-type checks above this is byte for byte what
    # encode_claims(claims) writes. They are encoded in one call, as an array:
    # a deterministic array is its one-byte head (fewer than 24 items) followed
    # by the deterministic encoding of each item, so the comparison below checks
    # every item exactly (cbor2.dumps has a large fixed cost per call).
    received = b"".join(
        [bytes([_CBOR_ARRAY | (1 + len(bodies))]), data, *(m[1] for m in claims_map[CLAIM_MEASUREMENTS])]
    )
    if cbor2.dumps([claims_map, *bodies], canonical=True) != received:
        raise MalformedInput("the claims set is not in deterministic CBOR encoding")
    return claims


def sign_eat(claims: EatClaims, key: PrivateKey, *, x5chain: Sequence[bytes]) -> bytes:
    """Return the EAT: COSE_Sign1 (ES256) over the encoded claims, with ``x5chain``."""
    return sign1(encode_claims(claims), key, x5chain=x5chain)


def decode_eat(
    token: bytes, *, max_size: int = DEFAULT_MAX_EAT_BYTES, verify_key_point: bool = True
) -> tuple[Sign1Message, EatClaims]:
    """Decode an EAT without verifying its signature or chain.

    The caller verifies the chain, then the signature with
    :func:`bastion.crypto.cose.verify_sign1`, before trusting any claim.
    ``verify_key_point=False`` leaves the on-curve check of the key to certify
    to a caller that loads the key itself (the length is always checked).

    Raises:
        MalformedInput: as :func:`decode_sign1` and :func:`decode_claims`, or the
            message has no ``x5chain``.
    """
    message = decode_sign1(token, max_size=max_size)
    if not message.x5chain:
        raise MalformedInput("the EAT has no x5chain header")
    return message, decode_claims(message.payload, max_size=max_size, verify_key_point=verify_key_point)
