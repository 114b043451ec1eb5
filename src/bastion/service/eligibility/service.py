"""Issuing download credentials to devices in good standing.

The request is a COSE_Sign1 by the device key that attestation certified, with
``x5chain`` = [device certificate], over a CBOR map::

    {"purpose": "download-credential", "device_id": tstr, "iat": int}

(``purpose`` keeps a status report, signed by the same key, from being replayed
here). The checks, in order; each refusal after the signature verified is a
``device.download_credential`` audit event (bounded by
:class:`~bastion.service.eligibility.refusals.RefusalLog`):

1. size bound, COSE structure (``malformed_request``, 400);
2. the certificate chains to its tenant's CA and is valid at ``now``, and the
   signature verifies (``untrusted_certificate``, ``certificate_expired``,
   ``bad_signature``: the same checks as status reports);
3. the payload parses and names the certificate's device (``device_mismatch``),
   ``iat`` is within :attr:`CredentialLimits.clock_skew` (``stale_request``);
4. standing, read from the database now: the device is claimed by the
   certificate's tenant (``device_not_claimed``), not revoked (``device_revoked``),
   its last attestation passed (``attestation_failed``) and it is in a device group
   (``no_group``).

The answer is a credential for the device's current group, valid for
:data:`~bastion.service.eligibility.credential.CREDENTIAL_TTL`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy.orm import Session

from bastion.crypto.cose import cbor_loads_exact, decode_sign1
from bastion.crypto.errors import CryptoError, MalformedInput
from bastion.service.devicestatus.service import RevokedCertificateError, authenticate_device
from bastion.service.eligibility.credential import CREDENTIAL_TTL, DownloadKey, mint_credential
from bastion.service.eligibility.refusals import RefusalLog, record_refusal
from bastion.service.errors import Forbidden, InvalidRequest, PayloadTooLarge
from bastion.service.models import Device

__all__ = [
    "CREDENTIAL_PURPOSE",
    "DEFAULT_CREDENTIAL_LIMITS",
    "CredentialLimits",
    "IssuedCredential",
    "issue_credential",
]

#: The ``purpose`` of a credential request (domain separation from status reports).
CREDENTIAL_PURPOSE = "download-credential"
_DEVICE_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CredentialLimits:
    """Bounds of the credential endpoint."""

    #: A credential request (COSE_Sign1 with one certificate).
    max_request_bytes: int = 8 * 1024
    #: A request's ``iat`` may differ from the service clock by at most this much.
    clock_skew: dt.timedelta = dt.timedelta(minutes=5)
    #: Lifetime of an issued credential (at most :data:`CREDENTIAL_TTL`).
    ttl: dt.timedelta = CREDENTIAL_TTL


DEFAULT_CREDENTIAL_LIMITS = CredentialLimits()


@dataclass(frozen=True)
class IssuedCredential:
    """A credential as handed to the device."""

    credential: str
    device_id: str
    group_id: str
    expires_at: dt.datetime


def _malformed(detail: str) -> InvalidRequest:
    return InvalidRequest(f"malformed credential request: {detail}", code="malformed_request")


def _request_fields(payload: bytes) -> tuple[str, int]:
    try:
        data = cbor_loads_exact(payload)
    except MalformedInput as exc:
        raise _malformed("the payload is not well-formed CBOR") from exc
    if not isinstance(data, dict) or data.get("purpose") != CREDENTIAL_PURPOSE:
        raise _malformed(f'the payload must be a map with "purpose": "{CREDENTIAL_PURPOSE}"')
    device_id, iat = data.get("device_id"), data.get("iat")
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise _malformed("device_id must be 64 lowercase hex characters")
    if isinstance(iat, bool) or not isinstance(iat, int) or not 0 <= iat < 2**37:
        raise _malformed("iat must be seconds since the epoch")
    return device_id, iat


def issue_credential(
    session: Session,
    body: bytes,
    *,
    now: dt.datetime,
    key: DownloadKey,
    refusals: RefusalLog,
    limits: CredentialLimits = DEFAULT_CREDENTIAL_LIMITS,
) -> IssuedCredential:
    """Verify a signed credential request and the device's standing; return a credential.

    Raises:
        PayloadTooLarge: over ``limits.max_request_bytes``.
        InvalidRequest: ``malformed_request``.
        Forbidden: a certificate or signature failure, or a standing check (see the module docstring).
    """
    if len(body) > limits.max_request_bytes:
        raise PayloadTooLarge(
            f"a credential request is at most {limits.max_request_bytes} bytes", code="request_too_large"
        )
    try:
        message = decode_sign1(body, max_size=limits.max_request_bytes)
    except CryptoError as exc:
        raise _malformed(str(exc)) from exc
    revoked: RevokedCertificateError | None = None
    try:
        tenant_id, cert_device = authenticate_device(session, message, now=now)
    except RevokedCertificateError as exc:  # authenticated, then refused below: recorded like any standing check
        revoked, tenant_id, cert_device = exc, exc.tenant_id, exc.device_id
    device_id, iat = _request_fields(message.payload)

    def refuse(code: str, detail: str, why: str) -> NoReturn:
        record_refusal(
            session,
            refusals,
            (cert_device, "credential", code),
            now=now,
            tenant_id=tenant_id,
            actor=f"device:{cert_device}",
            action="device.download_credential",
            target=f"device:{cert_device}",
            detail=why,
        )
        raise Forbidden(detail, code=code)

    if revoked is not None:
        refuse("certificate_revoked", f"{revoked.detail}, so it gets no updates", "certificate revoked: no updates")
    if device_id != cert_device:
        refuse("device_mismatch", "the request's device_id is not the certificate's device", "device_id differs")
    if abs(dt.datetime.fromtimestamp(iat, dt.UTC) - now) > limits.clock_skew:
        refuse(
            "stale_request",
            f"the request's iat is more than {int(limits.clock_skew.total_seconds())} s from the service clock; "
            "check the device clock",
            f"iat {iat} outside the skew bound",
        )
    device = session.get(Device, cert_device)
    if device is None or device.tenant_id != tenant_id:
        refuse(
            "device_not_claimed",
            "the device is not claimed by its certificate's tenant, so it gets no updates; "
            "claim it (bastion device claim) and let it attest",
            "not claimed by this tenant: no updates",
        )
    if device.revoked_at is not None:
        refuse("device_revoked", "the device is revoked, so it gets no updates", "device revoked: no updates")
    if device.last_result != "ok":
        reason = device.last_reason or "none recorded"
        refuse(
            "attestation_failed",
            f"the device's last attestation did not pass ({reason[:80]}), so it gets no updates until it "
            "attests successfully",
            f"last attestation not ok ({reason[:80]}): no updates",
        )
    if device.group_id is None:
        refuse(
            "no_group",
            "the device is in no device group, so there is nothing to download; put it in one (bastion device assign)",
            "in no device group",
        )
    expires = int((now + min(limits.ttl, CREDENTIAL_TTL)).timestamp())
    token = mint_credential(key, device.device_id, device.group_id, tenant_id, expires=expires)
    return IssuedCredential(token, device.device_id, device.group_id, dt.datetime.fromtimestamp(expires, dt.UTC))
