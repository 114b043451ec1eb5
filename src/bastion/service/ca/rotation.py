"""Tenant CA rotation: a successor CA signs from now on; the old one is trusted until the overlap ends.

``rotate_tenant_ca`` creates the successor (a new self-signed P-256 CA, its key
sealed like the first) and sets the current signing CA's ``retire_at`` to
``now + overlap``. During the overlap the trust bundle holds both CAs and each
keeps a CRL; new device certificates come from the successor (each worker
picks it up within the attestation cache TTL). After the overlap the old CA is
retired: out of the bundle, no more CRLs (docs/adr/0012-tenant-ca-lifecycle.md).

Example:
    >>> result = rotate_tenant_ca(session, who, overlap=dt.timedelta(hours=48),
    ...                           master_key=key, now=now)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.crypto.certs import DEVICE_CERT_LIFETIME
from bastion.service.audit.service import record
from bastion.service.auth.service import Principal
from bastion.service.ca.service import create_tenant_ca, trusted_cas
from bastion.service.errors import Conflict, InvalidRequest, NotFound
from bastion.service.models import Tenant, TenantCA

__all__ = [
    "DEFAULT_OVERLAP",
    "MAX_OVERLAP",
    "MAX_TRUSTED_CAS",
    "RotationResult",
    "list_authorities",
    "rotate_tenant_ca",
]

#: Default overlap: two device-certificate lifetimes, so every certificate the
#: old CA issued has expired, and every relying party had a day to fetch the
#: new bundle, before the old CA retires.
DEFAULT_OVERLAP = 2 * DEVICE_CERT_LIFETIME
#: Longest overlap a rotation may ask for.
MAX_OVERLAP = dt.timedelta(days=90)
#: Most CAs a tenant may trust at once (the signing CA and those in overlap).
MAX_TRUSTED_CAS = 3


@dataclass(frozen=True)
class RotationResult:
    """The successor (now signing) and the CA it supersedes (retiring at ``retiring.retire_at``)."""

    successor: TenantCA
    retiring: TenantCA


def rotate_tenant_ca(
    session: Session, who: Principal, *, overlap: dt.timedelta, master_key: bytes, now: dt.datetime
) -> RotationResult:
    """Create a successor CA for the caller's tenant and start the old one's overlap; audited; commit.

    An overlap shorter than a device certificate's lifetime is allowed (an
    emergency rotation after a key compromise: the old CA's certificates stop
    being trusted early and their devices attest again for new ones).

    Raises:
        InvalidRequest: a negative overlap or one above :data:`MAX_OVERLAP`.
        Conflict: the tenant already trusts :data:`MAX_TRUSTED_CAS` CAs.
        NotFound: the tenant has no active CA.
    """
    if overlap < dt.timedelta(0) or overlap > MAX_OVERLAP:
        raise InvalidRequest(f"the overlap must be between 0 and {MAX_OVERLAP.days * 24} hours")
    trusted = trusted_cas(session, who.tenant_id, now=now)
    if not trusted:
        raise NotFound("this tenant has no active CA")
    if len(trusted) >= MAX_TRUSTED_CAS:
        raise Conflict(
            f"your tenant already trusts {len(trusted)} CAs; wait until an overlap ends "
            "(see 'bastion tenant ca list') before rotating again",
            code="too_many_cas",
        )
    current = trusted[0]
    tenant = session.get(Tenant, who.tenant_id)
    if tenant is None:  # pragma: no cover - the principal's tenant exists
        raise NotFound("no such tenant")
    current.retire_at = now + overlap
    generation = 1 + int(session.scalar(select(func.count()).where(TenantCA.tenant_id == who.tenant_id)) or 0)
    successor = create_tenant_ca(
        session, who.tenant_id, tenant.name, master_key=master_key, now=now, generation=generation
    )
    session.flush()
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="ca.rotate",
        target=f"ca:{successor.id}",
        detail=f"supersedes ca:{current.id}, which retires at {current.retire_at.isoformat()}",
    )
    session.commit()
    return RotationResult(successor=successor, retiring=current)


def list_authorities(session: Session, tenant_id: str, *, limit: int, offset: int) -> Sequence[TenantCA]:
    """The tenant's CAs, newest first, retired ones included."""
    return session.scalars(
        select(TenantCA).where(TenantCA.tenant_id == tenant_id).order_by(TenantCA.id.desc()).limit(limit).offset(offset)
    ).all()
