"""Device capability files: ``appDevelopment`` and ``fieldServicing`` (docs/compartments.md).

A capability file unlocks local operations on ONE device. It is a COSE_Sign1
(ES256, RFC 9052 section 4.2) made by the tenant's CA key, the key whose
certificate every device of the tenant receives with its device certificate, so
the device can check the file offline. The protected header carries ``alg``,
``content type`` (:data:`CONTENT_TYPE`) and ``kid``: the SHA-256 of the signer's
SEC1 public key (the key id images use too). The payload is one CBOR map in
deterministic encoding (RFC 8949 section 4.2):

=================  ==========================================================
key                value
=================  ==========================================================
``v``              uint, :data:`FORMAT_VERSION`
``id``             tstr, the capability's UUID (the service can revoke it by id)
``kind``           tstr, ``appDevelopment`` or ``fieldServicing``
``device_id``      tstr, the one device it is for (64 lowercase hex)
``tenant_id``      tstr, the tenant that issued it
``developer_keys`` [bstr], SEC1 P-256 public keys whose app images may be
                   sideloaded (``appDevelopment``: 1..8; ``fieldServicing``:
                   none, only production-signed images)
``iat``, ``exp``   uint, seconds since the epoch; ``iat < exp``
=================  ==========================================================

Verification (:func:`verify_capability`) is pure and raises
:class:`~bastion.images.errors.CapabilityError` whose ``reason`` names the first
check that failed, in this order: ``malformed`` (size, CBOR, fields, encoding),
``unknown_signer``, ``bad_signature``, ``wrong_device``, ``wrong_tenant``,
``not_yet_valid``, ``expired``.

Example:
    >>> import datetime as dt
    >>> from bastion.crypto.keys import generate_private_key, public_key_bytes
    >>> ca, dev = generate_private_key(), generate_private_key()
    >>> now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> claims = CapabilityClaims(
    ...     capability_id="0f5b8a52-5f0e-4d55-9d38-2a3f3b1f5e01", kind=CapabilityKind.APP_DEVELOPMENT,
    ...     device_id="ab" * 32, tenant_id="acme", developer_keys=(public_key_bytes(dev.public_key()),),
    ...     issued_at=int(now.timestamp()), expires_at=int(now.timestamp()) + 3600)
    >>> data = build_capability(claims, ca)
    >>> verify_capability(data, trusted_keys=[ca.public_key()], device_id="ab" * 32,
    ...                   tenant_id="acme", now=now).kind.value
    'appDevelopment'
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from bastion.crypto.cose import HEADER_CONTENT_TYPE, HEADER_KID, cbor_loads_exact, decode_sign1, sign1, verify_sign1
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, PublicKey, load_public_key_bytes
from bastion.images.errors import CapabilityError
from bastion.images.package import key_id

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_CAPABILITY_LIMITS",
    "FORMAT_VERSION",
    "Capability",
    "CapabilityClaims",
    "CapabilityKind",
    "CapabilityLimits",
    "build_capability",
    "decode_capability",
    "verify_capability",
]

#: The protected ``content type`` of a capability file.
CONTENT_TYPE = "application/bastion-capability+cbor"
FORMAT_VERSION = 1
_FIELDS = frozenset({"v", "id", "kind", "device_id", "tenant_id", "developer_keys", "iat", "exp"})
_DEVICE_ID = re.compile(r"[0-9a-f]{64}")
_KEY_POINT_BYTES = 65
_KID_BYTES = 32
#: Largest accepted time value: 9999-12-31T23:59:59Z, the last second a datetime
#: can show (a larger ``exp`` once decoded and then raised OverflowError wherever
#: the file was shown: fuzz/harnesses/fuzz_capability.py). It fits a signed 64-bit column.
_MAX_TIME = 253_402_300_799


class CapabilityKind(enum.StrEnum):
    """What a capability unlocks (Azure Sphere's names)."""

    #: Sideload apps signed by the listed developer keys; the device joins its
    #: product's Development group and takes no cloud app updates.
    APP_DEVELOPMENT = "appDevelopment"
    #: Start, stop and read the logs of apps, and sideload production-signed
    #: images; the device keeps its group and its updates.
    FIELD_SERVICING = "fieldServicing"


@dataclass(frozen=True)
class CapabilityLimits:
    """Bounds applied while decoding and checking a capability file.

    Attributes:
        max_bytes: the largest encoded file.
        max_developer_keys: developer keys one file may list.
        max_text_chars: bound on the tenant id.
        clock_skew_s: how far ahead of the verifier's clock ``iat`` may be.
    """

    max_bytes: int = 4096
    max_developer_keys: int = 8
    max_text_chars: int = 64
    clock_skew_s: int = 300


DEFAULT_CAPABILITY_LIMITS = CapabilityLimits()


@dataclass(frozen=True)
class CapabilityClaims:
    """What a capability file says (the payload), before or after signing."""

    capability_id: str
    kind: CapabilityKind
    device_id: str
    tenant_id: str
    developer_keys: tuple[bytes, ...]
    issued_at: int
    expires_at: int

    def to_cbor(self) -> bytes:
        """The payload: a deterministic CBOR map."""
        return cbor2.dumps(
            {
                "v": FORMAT_VERSION,
                "id": self.capability_id,
                "kind": self.kind.value,
                "device_id": self.device_id,
                "tenant_id": self.tenant_id,
                "developer_keys": list(self.developer_keys),
                "iat": self.issued_at,
                "exp": self.expires_at,
            },
            canonical=True,
        )


@dataclass(frozen=True)
class Capability(CapabilityClaims):
    """A decoded capability file.

    Attributes:
        signer: the ``kid`` of the key that signed it (SHA-256 of its SEC1 point).
        encoded: the file's bytes, exactly as received.
    """

    signer: bytes = b""
    encoded: bytes = b""

    @property
    def developer_public_keys(self) -> tuple[PublicKey, ...]:
        """The developer keys as public keys (their points were checked when decoded)."""
        return tuple(load_public_key_bytes(k) for k in self.developer_keys)

    @property
    def developer_key_ids(self) -> tuple[str, ...]:
        """Hex key ids of the developer keys (what image headers name as ``signer``)."""
        return tuple(key_id(k).hex() for k in self.developer_public_keys)

    def expires(self) -> dt.datetime:
        """The expiry as a UTC datetime."""
        return dt.datetime.fromtimestamp(self.expires_at, dt.UTC)

    def issued(self) -> dt.datetime:
        """The issue time as a UTC datetime."""
        return dt.datetime.fromtimestamp(self.issued_at, dt.UTC)


def _malformed(message: str) -> CapabilityError:
    return CapabilityError(f"capability file: {message}", reason="malformed")


def _uint(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIME:
        raise _malformed(f"{name} is not an unsigned integer")
    return value


def _check_id(value: Any) -> str:
    try:
        if not isinstance(value, str) or str(uuid.UUID(value)) != value:
            raise ValueError(value)
    except ValueError:
        raise _malformed("id is not a canonical lower-case UUID") from None
    return value


def _developer_keys(value: Any, kind: CapabilityKind, limits: CapabilityLimits) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > limits.max_developer_keys:
        raise _malformed(f"developer_keys is not a list of at most {limits.max_developer_keys} keys")
    for key in value:
        if not isinstance(key, bytes) or len(key) != _KEY_POINT_BYTES:
            raise _malformed("a developer key is not a 65-byte SEC1 P-256 point")
        try:
            load_public_key_bytes(key)
        except CryptoError:
            raise _malformed("a developer key is not a point on P-256") from None
    if len(set(value)) != len(value):
        raise _malformed("developer_keys lists a key twice")
    if kind is CapabilityKind.APP_DEVELOPMENT and not value:
        raise _malformed("an appDevelopment capability lists at least one developer key")
    if kind is CapabilityKind.FIELD_SERVICING and value:
        raise _malformed("a fieldServicing capability lists no developer keys (production-signed images only)")
    return tuple(value)


def _claims(payload: Any, limits: CapabilityLimits) -> CapabilityClaims:
    if not isinstance(payload, dict) or set(payload) != _FIELDS:
        raise _malformed(f"the payload is not a map with exactly the fields {sorted(_FIELDS)}")
    if type(payload["v"]) is not int or payload["v"] != FORMAT_VERSION:
        raise _malformed(f"unsupported format version (this device reads version {FORMAT_VERSION})")
    try:
        kind = CapabilityKind(payload["kind"])
    except ValueError:
        raise _malformed(f"kind is not one of {', '.join(k.value for k in CapabilityKind)}") from None
    device_id, tenant_id = payload["device_id"], payload["tenant_id"]
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise _malformed("device_id is not 64 lowercase hex characters")
    if not isinstance(tenant_id, str) or not 0 < len(tenant_id) <= limits.max_text_chars or not tenant_id.isprintable():
        raise _malformed(f"tenant_id is not 1..{limits.max_text_chars} printable characters")
    issued_at, expires_at = _uint(payload["iat"], "iat"), _uint(payload["exp"], "exp")
    if expires_at <= issued_at:
        raise _malformed("exp is not after iat")
    return CapabilityClaims(
        capability_id=_check_id(payload["id"]),
        kind=kind,
        device_id=device_id,
        tenant_id=tenant_id,
        developer_keys=_developer_keys(payload["developer_keys"], kind, limits),
        issued_at=issued_at,
        expires_at=expires_at,
    )


def build_capability(
    claims: CapabilityClaims, key: PrivateKey, *, limits: CapabilityLimits = DEFAULT_CAPABILITY_LIMITS
) -> bytes:
    """Sign ``claims`` with ``key`` (the tenant CA key) and return the capability file.

    Raises:
        CapabilityError: (``malformed``) the claims break the format, so no
            device would accept the file.
    """
    payload = claims.to_cbor()
    data = sign1(payload, key, content_type=CONTENT_TYPE, kid=key_id(key.public_key()))
    decode_capability(data, limits=limits)  # one place enforces the format, for the issuer too
    return data


def decode_capability(data: bytes, *, limits: CapabilityLimits = DEFAULT_CAPABILITY_LIMITS) -> Capability:
    """Decode a capability file WITHOUT verifying its signature (to show it, or pick a key).

    Raises:
        CapabilityError: (``malformed``) oversized, not COSE_Sign1 ES256, no
            ``kid`` or wrong ``content type``, or a payload that breaks the format.
    """
    return _decode(data, limits)[1]


def _decode(data: bytes, limits: CapabilityLimits) -> tuple[Any, Capability]:
    if len(data) > limits.max_bytes:
        raise _malformed(f"larger than {limits.max_bytes} bytes")
    try:
        message = decode_sign1(data, max_size=limits.max_bytes)
    except CryptoError as exc:
        raise _malformed(f"not a COSE_Sign1 ES256 message ({exc})") from exc
    if message.protected.get(HEADER_CONTENT_TYPE) != CONTENT_TYPE:
        raise _malformed(f"the protected content type is not {CONTENT_TYPE}")
    kid = message.protected.get(HEADER_KID)
    if not isinstance(kid, bytes) or len(kid) != _KID_BYTES:
        raise _malformed("the protected header has no 32-byte kid")
    if message.unprotected:
        raise _malformed("the unprotected header must be empty")
    try:
        payload = cbor_loads_exact(message.payload)
    except CryptoError as exc:
        raise _malformed("the payload is not one CBOR item") from exc
    claims = _claims(payload, limits)
    # RFC 8949 section 4.2: exactly one encoding per capability, so the signed
    # bytes and what the service records about them cannot differ.
    if claims.to_cbor() != message.payload:
        raise _malformed("the payload is not in deterministic CBOR encoding")
    return message, Capability(**vars(claims), signer=kid, encoded=bytes(data))


def verify_capability(
    data: bytes,
    *,
    trusted_keys: Sequence[PublicKey],
    device_id: str,
    tenant_id: str,
    now: dt.datetime,
    limits: CapabilityLimits = DEFAULT_CAPABILITY_LIMITS,
) -> Capability:
    """Verify a capability file for one device of one tenant at ``now``.

    Args:
        data: the file's bytes.
        trusted_keys: the tenant CA key(s) (on a device: from its stored CA chain).
        device_id: the verifying device's own ID (or, on the service, the
            attested device's).
        tenant_id: the tenant the device belongs to.
        now: the verification time (timezone-aware).
        limits: the bounds.

    Returns:
        The verified capability.

    Raises:
        CapabilityError: with the ``reason`` of the first failed check (module docstring).
    """
    message, capability = _decode(data, limits)
    signers = [k for k in trusted_keys if hmac.compare_digest(key_id(k), capability.signer)]
    if not signers:
        raise CapabilityError(
            f"the capability is signed by key {capability.signer.hex()[:16]}, not by this tenant's CA",
            reason="unknown_signer",
        )
    try:
        verify_sign1(message, signers[0])
    except CryptoError as exc:
        raise CapabilityError("the capability's signature does not verify", reason="bad_signature") from exc
    if not hmac.compare_digest(capability.device_id, device_id):
        raise CapabilityError(
            f"the capability is for device {capability.device_id[:16]}…, not this one", reason="wrong_device"
        )
    if capability.tenant_id != tenant_id:
        raise CapabilityError("the capability was issued by another tenant", reason="wrong_tenant")
    at = int(now.timestamp())
    if capability.issued_at > at + limits.clock_skew_s:
        raise CapabilityError("the capability is not valid yet (check the device clock)", reason="not_yet_valid")
    if at >= capability.expires_at:
        raise CapabilityError(
            f"the capability expired at {capability.expires().isoformat()}; issue a new one", reason="expired"
        )
    return capability
