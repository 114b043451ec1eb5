"""Issuing, listing and revoking device capability files, scoped to the caller's tenant.

A capability file (:mod:`bastion.images.capability`) is signed with the tenant's
CA key, which every device of the tenant can check with the CA certificate it
received at attestation. It is bound to one device ID and expires. An
``appDevelopment`` capability also names the product Development group the
device joins when it attests with it (:mod:`bastion.service.attestation`).

Another tenant's device is reported exactly like a missing one (NotFound) and
audited as denied; every issue and revoke is audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import load_public_key_bytes, load_public_key_pem, public_key_bytes
from bastion.images.capability import CapabilityClaims, CapabilityKind, build_capability
from bastion.images.errors import CapabilityError
from bastion.images.package import key_id
from bastion.service.audit.service import record
from bastion.service.auth.service import Principal
from bastion.service.ca.service import load_signing_ca
from bastion.service.capabilities import repository
from bastion.service.capabilities.limits import DEFAULT_CAPABILITY_POLICY, CapabilityPolicy
from bastion.service.devices.service import get_device_for
from bastion.service.errors import InvalidRequest, NotFound
from bastion.service.fleet.service import get_product_for
from bastion.service.models import DeviceCapability, DeviceGroup

__all__ = ["IssuedCapability", "issue_capability", "list_capabilities", "revoke_capability"]


@dataclass(frozen=True)
class IssuedCapability:
    """A new capability: its row and the signed file."""

    row: DeviceCapability
    data: bytes


def _kind(value: str) -> CapabilityKind:
    try:
        return CapabilityKind(value)
    except ValueError:
        names = ", ".join(k.value for k in CapabilityKind)
        raise InvalidRequest(
            f"unknown capability kind {value[:32]!r}; use one of {names}", code="invalid_capability_kind"
        ) from None


def _developer_keys(pems: Sequence[str], kind: CapabilityKind, policy: CapabilityPolicy) -> tuple[bytes, ...]:
    if kind is CapabilityKind.FIELD_SERVICING and pems:
        raise InvalidRequest(
            "a fieldServicing capability takes no developer keys: it sideloads production-signed images only",
            code="invalid_developer_key",
        )
    if kind is CapabilityKind.APP_DEVELOPMENT and not pems:
        raise InvalidRequest(
            "an appDevelopment capability needs at least one developer key (a P-256 public key PEM)",
            code="invalid_developer_key",
        )
    if len(pems) > policy.max_developer_keys:
        raise InvalidRequest(
            f"at most {policy.max_developer_keys} developer keys per capability", code="invalid_developer_key"
        )
    points: list[bytes] = []
    for index, pem in enumerate(pems):
        try:
            if len(pem) > policy.max_key_pem_chars:
                raise ValueError("too long")
            point = public_key_bytes(load_public_key_pem(pem.encode("ascii")))
        except (CryptoError, ValueError, UnicodeEncodeError):
            raise InvalidRequest(
                f"developer key {index + 1} is not a P-256 public key in PEM (SubjectPublicKeyInfo)",
                code="invalid_developer_key",
            ) from None
        if point not in points:
            points.append(point)
    return tuple(points)


def _validity(valid_days: int | None, policy: CapabilityPolicy) -> dt.timedelta:
    if valid_days is None:
        return policy.default_validity
    validity = dt.timedelta(days=valid_days)
    if validity > policy.max_validity:
        raise InvalidRequest(
            f"a capability lives at most {policy.max_validity.days} days; asked for {valid_days}",
            code="invalid_validity",
        )
    return validity


def _development_group(
    session: Session, who: Principal, group_id: str | None, product_ref: str | None, *, now: dt.datetime
) -> DeviceGroup:
    """The Development group of the named product, else of the product of the device's group."""
    if product_ref is not None:
        product_id = get_product_for(session, who, product_ref, action="capability.issue", now=now).id
    else:
        current = session.get(DeviceGroup, group_id) if group_id is not None else None
        if current is None:
            raise InvalidRequest(
                "the device is in no device group, so its product is unknown; name the product "
                "whose Development group it joins (`--product NAME`)",
                code="product_required",
            )
        product_id = current.product_id
    group = repository.development_group(session, who.tenant_id, product_id)
    if group is None:
        raise NotFound("the product has no Development group")
    return group


def issue_capability(
    session: Session,
    who: Principal,
    device_id: str,
    *,
    kind: str,
    developer_keys: Sequence[str],
    product: str | None,
    valid_days: int | None,
    master_key: bytes,
    now: dt.datetime,
    policy: CapabilityPolicy = DEFAULT_CAPABILITY_POLICY,
) -> IssuedCapability:
    """Issue a capability file for one of the caller's devices, signed by the tenant CA; audit; commit.

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: the device (or the named product) is not in the caller's tenant.
        InvalidRequest: unknown kind, bad developer keys, too long a lifetime, or
            (appDevelopment) no product to take the Development group from.
    """
    device = get_device_for(session, who, device_id, action="capability.issue", now=now)
    cap_kind = _kind(kind)
    points = _developer_keys(developer_keys, cap_kind, policy)
    validity = _validity(valid_days, policy)
    group = (
        _development_group(session, who, device.group_id, product, now=now)
        if cap_kind is CapabilityKind.APP_DEVELOPMENT
        else None
    )
    ca_key, _ = load_signing_ca(session, who.tenant_id, master_key)
    issued_at = now.replace(microsecond=0)
    claims = CapabilityClaims(
        capability_id=str(uuid.uuid4()),
        kind=cap_kind,
        device_id=device_id,
        tenant_id=who.tenant_id,
        developer_keys=points,
        issued_at=int(issued_at.timestamp()),
        expires_at=int((issued_at + validity).timestamp()),
    )
    try:
        data = build_capability(claims, ca_key)
    except CapabilityError as exc:  # the checks above admit only well-formed claims
        raise InvalidRequest(f"the capability cannot be built: {exc}", code="invalid_capability") from exc
    key_ids = [key_id(load_public_key_bytes(p)).hex() for p in points]
    row = DeviceCapability(
        id=claims.capability_id,
        tenant_id=who.tenant_id,
        device_id=device_id,
        kind=cap_kind.value,
        developer_key_ids=key_ids,
        group_id=group.id if group is not None else None,
        sha256=hashlib.sha256(data).hexdigest(),
        issued_at=issued_at,
        expires_at=issued_at + validity,
        issued_by=who.actor,
    )
    session.add(row)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="capability.issue",
        target=f"device:{device_id}",
        detail=(
            f"capability={row.id} kind={row.kind} developer_keys={','.join(k[:16] for k in key_ids) or 'none'} "
            f"group={row.group_id or 'none'} expires={row.expires_at.isoformat()}"
        ),
    )
    session.commit()
    return IssuedCapability(row=row, data=data)


def list_capabilities(
    session: Session,
    who: Principal,
    device_id: str,
    *,
    now: dt.datetime,
    policy: CapabilityPolicy = DEFAULT_CAPABILITY_POLICY,
) -> Sequence[DeviceCapability]:
    """The capabilities issued for one of the caller's devices, newest first.

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: the device is not in the caller's tenant.
    """
    get_device_for(session, who, device_id, action="capability.list", now=now)
    return repository.list_capabilities(session, who.tenant_id, device_id, limit=policy.list_rows)


def revoke_capability(
    session: Session, who: Principal, device_id: str, capability_id: str, *, now: dt.datetime
) -> DeviceCapability:
    """Revoke a capability: the device's next attestation with it is refused. Idempotent; audited; commit.

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: the device or the capability is not in the caller's tenant.
    """
    get_device_for(session, who, device_id, action="capability.revoke", now=now)
    row = repository.find_capability(session, who.tenant_id, device_id, capability_id[:36])
    if row is None:
        raise NotFound(
            f"no capability {capability_id[:36]!r} for this device; list them with 'bastion device capability list'"
        )
    already = row.revoked_at is not None
    if not already:
        row.revoked_at, row.revoked_by = now, who.actor
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="capability.revoke",
        target=f"device:{device_id}",
        detail=f"capability={row.id}" + (" already revoked" if already else ""),
    )
    session.commit()
    return row
