"""HTTP endpoints: issue, list and revoke a device's capability files."""

from __future__ import annotations

import base64

from fastapi import APIRouter

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.capabilities import service
from bastion.service.capabilities.schemas import CapabilityIssued, CapabilityOut, CapabilityRequest
from bastion.service.web import NowDep, SessionDep, SettingsDep

router = APIRouter(tags=["capabilities"])


@router.post("/devices/{device_id}/capabilities", status_code=201)
def issue(
    device_id: str,
    body: CapabilityRequest,
    *,
    who: ContributorDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> CapabilityIssued:
    issued = service.issue_capability(
        session,
        who,
        device_id,
        kind=body.kind,
        developer_keys=body.developer_keys,
        product=body.product,
        valid_days=body.valid_days,
        master_key=settings.master_key,
        now=now,
    )
    return CapabilityIssued(
        **CapabilityOut.model_validate(issued.row).model_dump(),
        capability=base64.b64encode(issued.data).decode("ascii"),
    )


@router.get("/devices/{device_id}/capabilities")
def list_capabilities(device_id: str, who: ReaderDep, session: SessionDep, now: NowDep) -> list[CapabilityOut]:
    return [CapabilityOut.model_validate(c) for c in service.list_capabilities(session, who, device_id, now=now)]


@router.post("/devices/{device_id}/capabilities/{capability_id}/revoke")
def revoke(device_id: str, capability_id: str, who: ContributorDep, session: SessionDep, now: NowDep) -> CapabilityOut:
    return CapabilityOut.model_validate(service.revoke_capability(session, who, device_id, capability_id, now=now))
