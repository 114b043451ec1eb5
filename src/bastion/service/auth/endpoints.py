"""HTTP endpoints: ``GET /whoami``, ``POST /tokens``."""

from __future__ import annotations

from fastapi import APIRouter

from bastion.service.auth.deps import AdminDep, ReaderDep
from bastion.service.auth.schemas import TokenCreate, TokenCreated, WhoAmI
from bastion.service.auth.service import create_token
from bastion.service.web import NowDep, SessionDep

router = APIRouter(tags=["auth"])


@router.get("/whoami")
def whoami(who: ReaderDep) -> WhoAmI:
    return WhoAmI(tenant_id=who.tenant_id, tenant_name=who.tenant_name, token_id=who.token_id, role=who.role)


@router.post("/tokens", status_code=201)
def post_token(body: TokenCreate, who: AdminDep, session: SessionDep, now: NowDep) -> TokenCreated:
    minted = create_token(session, who, name=body.name, role=body.role, now=now)
    return TokenCreated(token_id=minted.token_id, token=minted.token, role=body.role)
