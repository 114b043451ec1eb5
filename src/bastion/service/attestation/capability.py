"""The device capability an attestation carries: verify it, and say what it changes.

A device in development mode (or field servicing) puts its capability file in
the EAT (claim -70010, :mod:`bastion.crypto.eat`). Once the evidence, the nonce,
the device and its OS have passed, the service checks the file as the device
did: its signature under the tenant CA key, that it names this device and its
tenant, and that it has not expired (:func:`bastion.images.capability.verify_capability`);
then that the service issued it (its id and digest are on record for this
device) and has not revoked it. Each refusal has its own failure code and is
recorded like any refused attestation.

A good ``appDevelopment`` capability puts the device in its product's
Development group (recorded with the capability it came from); attesting
without one takes it back to the group it was in before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, Table, bindparam, select

from bastion.images.capability import CapabilityKind, verify_capability
from bastion.images.errors import CapabilityError
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.models import DeviceCapability

__all__ = ["PresentedCapability", "check_capability"]

_capabilities = cast(Table, DeviceCapability.__table__)
_CAPABILITY_ROW = select(
    _capabilities.c.tenant_id,
    _capabilities.c.device_id,
    _capabilities.c.kind,
    _capabilities.c.group_id,
    _capabilities.c.sha256,
    _capabilities.c.revoked_at,
).where(_capabilities.c.id == bindparam("capability_id"))

#: bastion.images.capability refusal reason -> attestation failure code.
_CODES = {
    "malformed": FailureCode.CAPABILITY_MALFORMED,
    "unknown_signer": FailureCode.CAPABILITY_UNTRUSTED,
    "bad_signature": FailureCode.CAPABILITY_BAD_SIGNATURE,
    "wrong_device": FailureCode.CAPABILITY_WRONG_DEVICE,
    "wrong_tenant": FailureCode.CAPABILITY_WRONG_TENANT,
    "not_yet_valid": FailureCode.CAPABILITY_EXPIRED,
    "expired": FailureCode.CAPABILITY_EXPIRED,
}


@dataclass(frozen=True)
class PresentedCapability:
    """A verified capability the device attested with.

    Attributes:
        capability_id: its id.
        kind: ``appDevelopment`` or ``fieldServicing``.
        group_id: the Development group the device joins (appDevelopment), else None.
    """

    capability_id: str
    kind: CapabilityKind
    group_id: str | None

    @property
    def development(self) -> bool:
        """Whether the device is in development mode."""
        return self.kind is CapabilityKind.APP_DEVELOPMENT

    def describe(self) -> str:
        """The attestation record's detail."""
        if self.development:
            return f"development mode: capability {self.capability_id}, Development group {self.group_id}"
        return f"field servicing: capability {self.capability_id}"


def _fail(code: FailureCode, detail: str, device_id: str) -> AttestationFailure:
    return AttestationFailure(code, detail, device_id=device_id, authenticated=True)


def check_capability(
    conn: Connection,
    data: bytes,
    *,
    device_id: str,
    tenant_id: str,
    tenant_ca: x509.Certificate,
    now: dt.datetime,
    older_cas: Sequence[x509.Certificate] = (),
) -> PresentedCapability | AttestationFailure:
    """Verify the capability an authenticated device presented.

    Args:
        conn: the service database (one indexed read).
        data: the capability claim's bytes.
        device_id: the attested device.
        tenant_id: the tenant that claimed it.
        tenant_ca: the tenant CA certificate whose key signs capabilities.
        older_cas: the tenant's other trusted CAs (a rotation's overlap): what they signed still verifies.
        now: the verification time.

    Returns:
        The capability, or the refusal (the caller records and raises it).
    """
    ca_keys = [ca.public_key() for ca in (tenant_ca, *older_cas)]
    trusted = [key for key in ca_keys if isinstance(key, ec.EllipticCurvePublicKey)]
    if not trusted:  # pragma: no cover - tenant CAs are P-256
        return _fail(FailureCode.CAPABILITY_UNTRUSTED, "the tenant CA key is not P-256", device_id)
    try:
        capability = verify_capability(data, trusted_keys=trusted, device_id=device_id, tenant_id=tenant_id, now=now)
    except CapabilityError as exc:
        code = _CODES.get(exc.reason, FailureCode.CAPABILITY_MALFORMED)
        return _fail(code, f"the device capability was refused: {exc}", device_id)
    row = conn.execute(_CAPABILITY_ROW, {"capability_id": capability.capability_id}).first()
    if (
        row is None
        or row.tenant_id != tenant_id
        or row.device_id != device_id
        or not hmac.compare_digest(row.sha256, hashlib.sha256(data).hexdigest())
    ):
        return _fail(
            FailureCode.CAPABILITY_REVOKED,
            "the device capability is not one this service issued for the device; install a new one",
            device_id,
        )
    if row.revoked_at is not None:
        return _fail(
            FailureCode.CAPABILITY_REVOKED,
            "the device capability has been revoked; disable development mode or install a new one",
            device_id,
        )
    group_id = row.group_id if capability.kind is CapabilityKind.APP_DEVELOPMENT else None
    return PresentedCapability(capability_id=capability.capability_id, kind=capability.kind, group_id=group_id)
