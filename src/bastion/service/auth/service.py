"""Authenticating operator tokens, checking roles and minting tokens.

Every failure is audited (without echoing the presented token) before the
typed error is raised.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.service.audit.service import record, record_denied
from bastion.service.auth.tokens import ROLES, NewToken, check_secret, new_token, parse_token, role_allows
from bastion.service.errors import Forbidden, InvalidRequest, Unauthenticated
from bastion.service.models import ApiToken, Tenant

__all__ = ["Principal", "authorize", "create_token", "issue_token"]

_BEARER = "bearer "
MAX_TOKEN_NAME = 100


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a token of one tenant, with one role."""

    tenant_id: str
    tenant_name: str
    token_id: str
    role: str

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"token:{self.token_id}"


def _authenticate(session: Session, authorization: str | None, *, now: dt.datetime, target: str) -> Principal:
    token_id: str | None = None
    tenant_id: str | None = None
    try:
        if authorization is None or not authorization[: len(_BEARER)].lower() == _BEARER:
            raise Unauthenticated("send an operator token as 'Authorization: Bearer <token>'")
        token_id, presented = parse_token(authorization[len(_BEARER) :].strip())
        row = session.execute(
            select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id).where(ApiToken.id == token_id)
        ).first()
        if row is None:
            raise Unauthenticated("the token is not valid")
        token, tenant_name = row[0], row[1]
        tenant_id = token.tenant_id
        check_secret(token.secret_hash, presented)
        if token.revoked_at is not None:
            raise Unauthenticated("the token has been revoked")
    except Unauthenticated as exc:
        # The token itself is never logged; its public id only when well-formed.
        record_denied(
            session,
            now=now,
            tenant_id=tenant_id,
            actor=f"token:{token_id}" if token_id else "anonymous",
            action="auth.bad_token",
            target=target,
            detail=exc.detail,
        )
        raise
    return Principal(tenant_id=token.tenant_id, tenant_name=tenant_name, token_id=token.id, role=token.role)


def authorize(session: Session, authorization: str | None, need: str, *, now: dt.datetime, target: str) -> Principal:
    """Authenticate an ``Authorization`` header value and require role ``need``.

    Args:
        session: database session.
        authorization: the raw header value, or None.
        need: the minimum role.
        now: current time (for the audit record).
        target: what was attempted, for the audit record (e.g. ``"POST /api/v1/tokens"``).

    Raises:
        Unauthenticated: no token, malformed, unknown, wrong secret or revoked.
        Forbidden: the token's role is below ``need``.
    """
    principal = _authenticate(session, authorization, now=now, target=target)
    if not role_allows(principal.role, need):
        record_denied(
            session,
            now=now,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="auth.insufficient_role",
            target=target,
            detail=f"role {principal.role} is below {need}",
        )
        raise Forbidden(f"this needs the {need} role; your token has the {principal.role} role")
    return principal


def issue_token(session: Session, tenant_id: str, *, name: str, role: str, now: dt.datetime) -> NewToken:
    """Add a new token row for ``tenant_id`` to the session (no commit, no audit).

    Raises:
        InvalidRequest: unknown role or bad name.
    """
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    if not name or len(name) > MAX_TOKEN_NAME or not name.isprintable():
        raise InvalidRequest(f"token name must be 1 to {MAX_TOKEN_NAME} printable characters")
    minted = new_token()
    session.add(
        ApiToken(
            id=minted.token_id,
            tenant_id=tenant_id,
            name=name,
            role=role,
            secret_hash=minted.secret_hash,
            created_at=now,
        )
    )
    return minted


def create_token(session: Session, principal: Principal, *, name: str, role: str, now: dt.datetime) -> NewToken:
    """Mint a token for the caller's tenant, audit it and commit."""
    minted = issue_token(session, principal.tenant_id, name=name, role=role, now=now)
    record(
        session,
        now=now,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="token.create",
        target=f"token:{minted.token_id}",
        detail=f"role={role} name={name}",
    )
    session.commit()
    return minted
