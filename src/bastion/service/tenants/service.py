"""Creating tenants (local administration on the service host)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.service.audit.service import record
from bastion.service.auth.limits import DEFAULT_AUTH_LIMITS, AuthLimits
from bastion.service.auth.service import issue_token
from bastion.service.ca.service import create_tenant_ca
from bastion.service.errors import InvalidRequest, TenantExists
from bastion.service.models import Tenant

__all__ = ["CreatedTenant", "create_tenant", "list_tenants"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LOCAL_ACTOR = "cli:local"


@dataclass(frozen=True)
class CreatedTenant:
    """A new tenant and its first admin token (shown once)."""

    tenant_id: str
    name: str
    admin_token_id: str
    admin_token: str = field(repr=False)


def create_tenant(
    session: Session,
    name: str,
    *,
    master_key: bytes,
    now: dt.datetime,
    actor: str = LOCAL_ACTOR,
    token_limits: AuthLimits = DEFAULT_AUTH_LIMITS,
) -> CreatedTenant:
    """Create a tenant, its CA (sealed under ``master_key``) and its first admin token; commit.

    The admin token expires after ``token_limits.token_default_lifetime``.

    Raises:
        InvalidRequest: the name is not 1-100 of ``A-Z a-z 0-9 . _ -`` starting alphanumeric.
        TenantExists: the name is taken.
    """
    if not _NAME_RE.fullmatch(name):
        raise InvalidRequest(
            "tenant name must be 1 to 100 characters of A-Z, a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit",
            code="invalid_tenant_name",
        )
    if session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise TenantExists(f"a tenant named {name!r} already exists")
    tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=now)
    session.add(tenant)
    session.flush()
    create_tenant_ca(session, tenant.id, name, master_key=master_key, now=now)
    minted = issue_token(session, tenant.id, name="first admin", role="admin", now=now, limits=token_limits)
    record(
        session,
        now=now,
        tenant_id=tenant.id,
        actor=actor,
        action="tenant.create",
        target=f"tenant:{tenant.id}",
        detail=f"name={name}",
    )
    record(
        session,
        now=now,
        tenant_id=tenant.id,
        actor=actor,
        action="token.create",
        target=f"token:{minted.token_id}",
        detail="role=admin name=first admin",
    )
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise TenantExists(f"a tenant named {name!r} already exists") from exc
    return CreatedTenant(tenant_id=tenant.id, name=name, admin_token_id=minted.token_id, admin_token=minted.token)


def list_tenants(session: Session) -> list[Tenant]:
    """Return all tenants by name."""
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))
