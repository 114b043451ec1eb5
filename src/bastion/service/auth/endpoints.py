"""HTTP endpoints: ``GET /whoami``, ``POST /tokens``, ``GET /tokens``, ``POST /tokens/{id}/revoke``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query

from bastion.service.auth.deps import AdminDep, ReaderDep
from bastion.service.auth.limits import AuthLimitsDep
from bastion.service.auth.schemas import TokenCreate, TokenCreated, TokenOut, WhoAmI
from bastion.service.auth.service import create_token, list_tokens, revoke_token, token_state
from bastion.service.models import ApiToken
from bastion.service.web import NowDep, SessionDep, SettingsDep

router = APIRouter(tags=["auth"])

#: Bound on a list offset (beyond it there is nothing to page to).
MAX_OFFSET = 1_000_000


def _out(token: ApiToken, now: dt.datetime) -> TokenOut:
    return TokenOut(
        token_id=token.id,
        name=token.name,
        role=token.role,
        state=token_state(token, now),
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        revoked_by=token.revoked_by,
    )


@router.get("/whoami")
def whoami(who: ReaderDep) -> WhoAmI:
    return WhoAmI(
        tenant_id=who.tenant_id,
        tenant_name=who.tenant_name,
        token_id=who.token_id,
        role=who.role,
        expires_at=who.expires_at,
    )


@router.post("/tokens", status_code=201)
def post_token(
    body: TokenCreate, who: AdminDep, session: SessionDep, now: NowDep, limits: AuthLimitsDep
) -> TokenCreated:
    lifetime = None if body.expires_in_s is None else dt.timedelta(seconds=body.expires_in_s)
    minted, row = create_token(session, who, name=body.name, role=body.role, now=now, lifetime=lifetime, limits=limits)
    return TokenCreated(token_id=minted.token_id, token=minted.token, role=body.role, expires_at=row.expires_at)


@router.get("/tokens")
def get_tokens(
    who: AdminDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[TokenOut]:
    """The tenant's tokens, oldest first, with their state; page with ``limit`` and ``offset``."""
    rows = list_tokens(session, who, limit=settings.limits.page(limit), offset=offset)
    return [_out(t, now) for t in rows]


@router.post("/tokens/{token_id}/revoke")
def post_revoke(
    token_id: Annotated[str, Path(max_length=64)], who: AdminDep, session: SessionDep, now: NowDep
) -> TokenOut:
    """Revoke a token of the tenant; it stops working at once."""
    return _out(revoke_token(session, who, token_id, now=now), now)
