"""Authenticating operator tokens, checking roles, and minting, listing and revoking tokens.

A failed authentication is counted in the service-wide log of
:mod:`bastion.service.auth.failures`, never in a tenant's audit view: the
presenter is unknown, and a token id is public. Only a token presented with its
right secret but revoked or expired is also written to its tenant's audit log,
at most once per token and
:attr:`~bastion.service.auth.limits.AuthLimits.stale_token_audit_window`.
The presented token itself is never logged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.audit.service import record, record_denied
from bastion.service.auth.failures import record_auth_failure
from bastion.service.auth.limits import DEFAULT_AUTH_LIMITS, AuthLimits
from bastion.service.auth.tokens import ROLES, NewToken, check_secret, new_token, parse_token, role_allows
from bastion.service.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from bastion.service.models import ApiToken, AuditEvent, Tenant

__all__ = [
    "Principal",
    "authorize",
    "create_token",
    "issue_token",
    "list_tokens",
    "revoke_token",
    "token_state",
]

_BEARER = "bearer "
MAX_TOKEN_NAME = 100
_RELOGIN = "ask a tenant admin for a new token (`bastion token create`) and run `bastion login`"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a token of one tenant, with one role."""

    tenant_id: str
    tenant_name: str
    token_id: str
    role: str
    #: When the token stops working (None: a token from before expiry existed).
    expires_at: dt.datetime | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"token:{self.token_id}"


class _Refused(Exception):  # noqa: N818 - internal carrier of (reason, error)
    def __init__(self, reason: str, error: Unauthenticated, stale: ApiToken | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.stale = stale


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds")


def token_state(token: ApiToken, now: dt.datetime) -> str:
    """``"revoked"``, ``"expired"`` or ``"active"``."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and now >= token.expires_at:
        return "expired"
    return "active"


def _check(session: Session, authorization: str | None, now: dt.datetime) -> tuple[ApiToken, str]:
    if authorization is None or authorization[: len(_BEARER)].lower() != _BEARER:
        raise _Refused("no_token", Unauthenticated("send an operator token as 'Authorization: Bearer <token>'"))
    try:
        token_id, presented = parse_token(authorization[len(_BEARER) :].strip())
    except Unauthenticated as exc:
        raise _Refused("malformed_token", exc) from exc
    row = session.execute(
        select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id).where(ApiToken.id == token_id)
    ).first()
    if row is None:
        raise _Refused("unknown_token", Unauthenticated("the token is not valid"))
    token, tenant_name = row[0], row[1]
    try:
        check_secret(token.secret_hash, presented)
    except Unauthenticated as exc:
        raise _Refused("wrong_secret", exc) from exc
    # Only the holder of the right secret learns that the token was revoked or has expired.
    if token.revoked_at is not None:
        error = Unauthenticated(f"the token was revoked at {_iso(token.revoked_at)}; {_RELOGIN}", code="token_revoked")
        raise _Refused("token_revoked", error, token)
    if token.expires_at is not None and now >= token.expires_at:
        error = Unauthenticated(f"the token expired at {_iso(token.expires_at)}; {_RELOGIN}", code="token_expired")
        raise _Refused("token_expired", error, token)
    return token, tenant_name


def _audit_stale_use(
    session: Session, token: ApiToken, reason: str, *, now: dt.datetime, target: str, limits: AuthLimits
) -> None:
    actor = f"token:{token.id}"
    recent = session.scalar(
        select(AuditEvent.id)
        .where(
            AuditEvent.tenant_id == token.tenant_id,
            AuditEvent.actor == actor,
            AuditEvent.action == "auth.stale_token",
            AuditEvent.at > now - limits.stale_token_audit_window,
        )
        .limit(1)
    )
    if recent is None:
        record_denied(
            session,
            now=now,
            tenant_id=token.tenant_id,
            actor=actor,
            action="auth.stale_token",
            target=target,
            detail=f"{reason.removeprefix('token_')} token presented (recorded once per "
            f"{int(limits.stale_token_audit_window.total_seconds())} s)",
        )


def _authenticate(
    session: Session, authorization: str | None, *, now: dt.datetime, target: str, limits: AuthLimits
) -> Principal:
    try:
        token, tenant_name = _check(session, authorization, now)
    except _Refused as refused:
        record_auth_failure(session, now=now, reason=refused.reason, target=target, limits=limits)
        if refused.stale is not None:
            _audit_stale_use(session, refused.stale, refused.reason, now=now, target=target, limits=limits)
        raise refused.error from None
    return Principal(
        tenant_id=token.tenant_id,
        tenant_name=tenant_name,
        token_id=token.id,
        role=token.role,
        expires_at=token.expires_at,
    )


def authorize(
    session: Session,
    authorization: str | None,
    need: str,
    *,
    now: dt.datetime,
    target: str,
    limits: AuthLimits = DEFAULT_AUTH_LIMITS,
) -> Principal:
    """Authenticate an ``Authorization`` header value and require role ``need``.

    Args:
        session: database session.
        authorization: the raw header value, or None.
        need: the minimum role.
        now: current time (expiry, and the records).
        target: what was attempted, for the records (e.g. ``"POST /api/v1/tokens"``).
        limits: token and failure-log bounds.

    Raises:
        Unauthenticated: no token, malformed, unknown, wrong secret, revoked (code
            ``token_revoked``) or expired (code ``token_expired``).
        Forbidden: the token's role is below ``need``.
    """
    principal = _authenticate(session, authorization, now=now, target=target, limits=limits)
    if not role_allows(principal.role, need):
        # The caller is authenticated, so this lands in its own tenant's audit view.
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


def _lifetime(lifetime: dt.timedelta | None, limits: AuthLimits) -> dt.timedelta:
    if lifetime is None:
        return limits.token_default_lifetime
    if not limits.token_min_lifetime <= lifetime <= limits.token_max_lifetime:
        low, high = int(limits.token_min_lifetime.total_seconds()), int(limits.token_max_lifetime.total_seconds())
        raise InvalidRequest(
            f"a token's lifetime must be from {low} to {high} seconds; pick an expiry in that range",
            code="invalid_expiry",
        )
    return lifetime


def issue_token(
    session: Session,
    tenant_id: str,
    *,
    name: str,
    role: str,
    now: dt.datetime,
    lifetime: dt.timedelta | None = None,
    limits: AuthLimits = DEFAULT_AUTH_LIMITS,
) -> NewToken:
    """Add a new token row for ``tenant_id`` to the session (no commit, no audit).

    Args:
        session: database session.
        tenant_id: the tenant that owns the token.
        name: a label.
        role: reader, contributor or admin.
        now: current time.
        lifetime: how long the token works; ``None`` is the default of ``limits``.
        limits: lifetime bounds.

    Raises:
        InvalidRequest: unknown role, bad name or a lifetime out of bounds.
    """
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    if not name or len(name) > MAX_TOKEN_NAME or not name.isprintable():
        raise InvalidRequest(f"token name must be 1 to {MAX_TOKEN_NAME} printable characters")
    expires_at = now + _lifetime(lifetime, limits)
    minted = new_token()
    session.add(
        ApiToken(
            id=minted.token_id,
            tenant_id=tenant_id,
            name=name,
            role=role,
            secret_hash=minted.secret_hash,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return minted


def create_token(
    session: Session,
    principal: Principal,
    *,
    name: str,
    role: str,
    now: dt.datetime,
    lifetime: dt.timedelta | None = None,
    limits: AuthLimits = DEFAULT_AUTH_LIMITS,
) -> tuple[NewToken, ApiToken]:
    """Mint a token for the caller's tenant, audit it and commit; return it and its row."""
    minted = issue_token(session, principal.tenant_id, name=name, role=role, now=now, lifetime=lifetime, limits=limits)
    row = session.get(ApiToken, minted.token_id)
    if row is None:  # pragma: no cover - just added to this session
        raise NotFound("the new token vanished")
    record(
        session,
        now=now,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="token.create",
        target=f"token:{minted.token_id}",
        detail=f"role={role} name={name} expires_at={_iso(row.expires_at or now)}",
    )
    session.commit()
    return minted, row


def list_tokens(session: Session, principal: Principal, *, limit: int, offset: int = 0) -> Sequence[ApiToken]:
    """The caller's tenant's tokens, oldest first (revoked and expired ones too)."""
    query = (
        select(ApiToken)
        .where(ApiToken.tenant_id == principal.tenant_id)
        .order_by(ApiToken.created_at, ApiToken.id)
        .limit(limit)
        .offset(offset)
    )
    return session.scalars(query).all()


def _usable_admins(session: Session, tenant_id: str, now: dt.datetime) -> int:
    query = select(func.count()).where(
        ApiToken.tenant_id == tenant_id,
        ApiToken.role == "admin",
        ApiToken.revoked_at.is_(None),
        (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),
    )
    return int(session.scalar(query) or 0)


def revoke_token(session: Session, principal: Principal, token_id: str, *, now: dt.datetime) -> ApiToken:
    """Revoke one of the caller's tenant's tokens at once, audit it and commit.

    Revoking a revoked token changes nothing and returns it as it is.

    Raises:
        NotFound: no such token in the caller's tenant (another tenant's looks the same).
        Conflict: it is the tenant's last usable admin token (the tenant would be locked out).
    """
    token = session.get(ApiToken, token_id) if len(token_id) <= 2 * 16 else None
    if token is None or token.tenant_id != principal.tenant_id:
        raise NotFound(f"no token {token_id[:64]!r} in this tenant; `bastion token list` shows its tokens")
    if token.revoked_at is not None:
        return token
    if (
        token_state(token, now) == "active"
        and token.role == "admin"
        and _usable_admins(session, token.tenant_id, now) <= 1
    ):
        raise Conflict(
            "this is the tenant's last usable admin token; create another first "
            "(`bastion token create --role admin`), log in with it, then revoke this one",
            code="last_admin_token",
        )
    token.revoked_at = now
    token.revoked_by = principal.actor
    record(
        session,
        now=now,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="token.revoke",
        target=f"token:{token.id}",
        detail=f"role={token.role} name={token.name}",
    )
    session.commit()
    return token
