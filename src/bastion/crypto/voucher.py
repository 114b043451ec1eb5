"""Ownership vouchers: a silicon vendor's signed statement that devices belong to one tenant.

Modelled on FIDO Device Onboard's ownership voucher (FDO 1.1, section 3.4.4),
cut down to what a self-hosted service needs: the vendor names one tenant and a
bounded list of device IDs, and signs that with its CA key. The tenant presents
the voucher to claim those devices in bulk, without touching them.

A voucher is a COSE_Sign1 (ES256, :mod:`bastion.crypto.cose`) whose protected
header carries ``content type`` :data:`VOUCHER_CONTENT_TYPE` and ``kid`` = the
SHA-256 of the signing vendor CA certificate's DER (its fingerprint), and whose
payload is the CBOR map::

    {
      "v": 1,                      format version
      "id": bstr .size 16,         random voucher ID (single use per device)
      "tenant": tstr,              the tenant ID the devices go to
      "devices": [+ tstr],         device IDs, 64 lowercase hex each, no duplicates
      "iat": uint,                 issued at, epoch seconds
      "exp": uint,                 expires at, epoch seconds (> iat)
    }

Decoding is bounded (:class:`VoucherLimits`) and strict (unknown keys, wrong
types, duplicate devices are errors). Verification is pure: it takes the bytes
and the trusted CA certificates, and returns the voucher or raises.

Example:
    >>> blob = sign_voucher(ca_key, ca_cert, tenant_id=t, device_ids=[d], now=now)  # doctest: +SKIP
    >>> voucher = verify_voucher(blob, trusted=[ca_cert])  # doctest: +SKIP
    >>> voucher.tenant_id == t  # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from bastion.crypto import cose
from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.keys import PrivateKey

__all__ = [
    "DEFAULT_VOUCHER_LIFETIME",
    "VOUCHER_CONTENT_TYPE",
    "VOUCHER_FORMAT_VERSION",
    "Voucher",
    "VoucherLimits",
    "ca_fingerprint",
    "decode_voucher",
    "sign_voucher",
    "verify_voucher",
]

#: COSE ``content type`` of a voucher (protected header label 3).
VOUCHER_CONTENT_TYPE = "application/bastion-voucher+cbor"
#: The payload format this module reads and writes.
VOUCHER_FORMAT_VERSION = 1
#: How long a voucher is valid when the vendor does not say.
DEFAULT_VOUCHER_LIFETIME = dt.timedelta(days=30)
_VOUCHER_ID_BYTES = 16
_DEVICE_ID_RE = re.compile(r"[0-9a-f]{64}")
_TENANT_ID_MAX = 64
_KEYS = frozenset({"v", "id", "tenant", "devices", "iat", "exp"})
_MAX_EPOCH = 2**32


@dataclass(frozen=True)
class VoucherLimits:
    """Safety bounds of the voucher decoder.

    A vendor splits a larger lot into several vouchers.

    Attributes:
        max_bytes: the largest encoded voucher accepted.
        max_devices: the most device IDs one voucher may list.
    """

    max_bytes: int = 40 * 1024  # base64 in a JSON body fits the service's 64 KiB body bound
    max_devices: int = 500


#: The limits used when none are given.
DEFAULT_LIMITS = VoucherLimits()


@dataclass(frozen=True)
class Voucher:
    """A decoded voucher (verified only if it came from :func:`verify_voucher`).

    Attributes:
        voucher_id: lowercase hex of the random 16-byte ID.
        tenant_id: the tenant the devices go to.
        device_ids: the device IDs, in the vendor's order.
        issued_at: when the vendor signed it.
        expires_at: after this moment it is refused.
        signer_fingerprint: hex SHA-256 of the DER of the CA certificate named by ``kid``.
    """

    voucher_id: str
    tenant_id: str
    device_ids: tuple[str, ...]
    issued_at: dt.datetime
    expires_at: dt.datetime
    signer_fingerprint: str


def ca_fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of a certificate's DER (the vendor CA's fingerprint)."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def sign_voucher(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    *,
    tenant_id: str,
    device_ids: Sequence[str],
    now: dt.datetime,
    lifetime: dt.timedelta = DEFAULT_VOUCHER_LIFETIME,
    limits: VoucherLimits = DEFAULT_LIMITS,
) -> bytes:
    """Sign a voucher for ``device_ids`` and ``tenant_id`` with the vendor CA key.

    Raises:
        MalformedInput: a device ID or the tenant ID is malformed, the list is
            empty, too long or has duplicates, ``lifetime`` is not positive, or
            the voucher would exceed ``limits.max_bytes``.
    """
    payload = {
        "v": VOUCHER_FORMAT_VERSION,
        "id": secrets.token_bytes(_VOUCHER_ID_BYTES),
        "tenant": tenant_id,
        "devices": list(device_ids),
        "iat": _epoch(now),
        "exp": _epoch(now + lifetime),
    }
    _check_payload(payload, limits)  # the vendor gets the same errors the service would give
    kid = bytes.fromhex(ca_fingerprint(ca_cert))
    signed = cose.sign1(cbor2.dumps(payload, canonical=True), ca_key, content_type=VOUCHER_CONTENT_TYPE, kid=kid)
    if len(signed) > limits.max_bytes:
        raise MalformedInput(f"the voucher would exceed {limits.max_bytes} bytes; split the devices over several")
    return signed


def _check_payload(value: Any, limits: VoucherLimits) -> tuple[bytes, str, tuple[str, ...], int, int]:
    """Validate the payload map's shape; return (id, tenant, devices, iat, exp)."""
    if not isinstance(value, dict) or set(value) != _KEYS:
        raise MalformedInput(f"a voucher payload is a map with exactly the keys {sorted(_KEYS)}")
    version = value["v"]
    if isinstance(version, bool) or version != VOUCHER_FORMAT_VERSION:
        raise MalformedInput(f"unsupported voucher version (this service reads version {VOUCHER_FORMAT_VERSION})")
    voucher_id = value["id"]
    if not isinstance(voucher_id, bytes) or len(voucher_id) != _VOUCHER_ID_BYTES:
        raise MalformedInput(f"the voucher id must be {_VOUCHER_ID_BYTES} bytes")
    tenant = value["tenant"]
    if not isinstance(tenant, str) or not 0 < len(tenant) <= _TENANT_ID_MAX:
        raise MalformedInput(f"the voucher tenant must be a tenant ID of 1..{_TENANT_ID_MAX} characters")
    devices = value["devices"]
    if not isinstance(devices, list) or not 0 < len(devices) <= limits.max_devices:
        raise MalformedInput(f"a voucher lists 1..{limits.max_devices} device IDs")
    for device_id in devices:
        if not isinstance(device_id, str) or not _DEVICE_ID_RE.fullmatch(device_id):
            raise MalformedInput("each voucher device ID is 64 lowercase hex characters")
    if len(set(devices)) != len(devices):
        raise MalformedInput("the voucher lists a device ID twice")
    times = []
    for name in ("iat", "exp"):
        moment = value[name]
        if isinstance(moment, bool) or not isinstance(moment, int) or not 0 <= moment < _MAX_EPOCH:
            raise MalformedInput(f"the voucher {name} must be epoch seconds")
        times.append(moment)
    iat, exp = times
    if exp <= iat:
        raise MalformedInput("the voucher expires before it was issued")
    return voucher_id, tenant, tuple(devices), iat, exp


def decode_voucher(data: bytes, *, limits: VoucherLimits = DEFAULT_LIMITS) -> tuple[cose.Sign1Message, Voucher]:
    """Decode a voucher without verifying its signature.

    Raises:
        MalformedInput: too large, not a COSE_Sign1, wrong content type, no
            32-byte ``kid``, or the payload breaks the format above.
    """
    if len(data) > limits.max_bytes:
        raise MalformedInput(f"a voucher is at most {limits.max_bytes} bytes")
    message = cose.decode_sign1(data, max_size=limits.max_bytes)
    if message.protected.get(cose.HEADER_CONTENT_TYPE) != VOUCHER_CONTENT_TYPE:
        raise MalformedInput(f"not a voucher: the protected content type is not {VOUCHER_CONTENT_TYPE}")
    kid = message.protected.get(cose.HEADER_KID)
    if not isinstance(kid, bytes) or len(kid) != hashlib.sha256().digest_size:
        raise MalformedInput("the voucher's kid must be the 32-byte SHA-256 of the vendor CA certificate")
    voucher_id, tenant, devices, iat, exp = _check_payload(cose.cbor_loads_exact(message.payload), limits)
    return message, Voucher(
        voucher_id=voucher_id.hex(),
        tenant_id=tenant,
        device_ids=devices,
        issued_at=dt.datetime.fromtimestamp(iat, dt.UTC),
        expires_at=dt.datetime.fromtimestamp(exp, dt.UTC),
        signer_fingerprint=kid.hex(),
    )


def verify_voucher(
    data: bytes,
    *,
    trusted: Sequence[x509.Certificate],
    limits: VoucherLimits = DEFAULT_LIMITS,
) -> Voucher:
    """Decode a voucher and verify it was signed by one of the ``trusted`` vendor CAs.

    This checks neither the tenant nor the validity window: the caller compares
    ``tenant_id`` with its own and ``issued_at``/``expires_at`` with its ``now``.

    Raises:
        MalformedInput: see :func:`decode_voucher`.
        InvalidSignature: no trusted CA has the ``kid``'s fingerprint, or the
            signature does not verify under its key.
    """
    message, voucher = decode_voucher(data, limits=limits)
    signer = next(
        (ca for ca in trusted if hmac.compare_digest(ca_fingerprint(ca), voucher.signer_fingerprint)),
        None,
    )
    if signer is None:
        raise InvalidSignature("the voucher is signed by a vendor CA this service does not trust")
    key = signer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidSignature("the vendor CA key is not an EC key; vouchers are ES256")
    cose.verify_sign1(message, key)  # RFC 9052 4.4
    return voucher
