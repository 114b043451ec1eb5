"""HTTP endpoints: a device group's appraisal policy (which boot rules it relaxes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from bastion.service.appraisal import service
from bastion.service.appraisal.schemas import PolicyOut, PolicyPageOut, PolicyUpdate
from bastion.service.auth.deps import AdminDep, ReaderDep
from bastion.service.web import NowDep, SessionDep

router = APIRouter(tags=["appraisal"])

#: Bound on ``offset`` (a signed 64-bit SQL OFFSET must not overflow).
MAX_OFFSET = 2**31 - 1


@router.get("/appraisal/groups")
def list_policies(
    who: ReaderDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> PolicyPageOut:
    return PolicyPageOut.of(service.list_policies(session, who, limit=limit, offset=offset))


@router.get("/appraisal/groups/{ref:path}")
def show_policy(ref: str, who: ReaderDep, session: SessionDep, now: NowDep) -> PolicyOut:
    return PolicyOut.of(service.get_policy(session, who, ref, now=now))


@router.put("/appraisal/groups/{ref:path}")
def set_policy(ref: str, body: PolicyUpdate, who: AdminDep, session: SessionDep, now: NowDep) -> PolicyOut:
    return PolicyOut.of(service.set_policy(session, who, ref, body.relax, now=now))
