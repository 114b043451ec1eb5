"""HTTP endpoints: claim, list, show and revoke devices."""

from __future__ import annotations

from fastapi import APIRouter

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.devices import service
from bastion.service.devices.schemas import AttestationOut, ClaimRequest, DeviceDetail, DeviceOut, UpdateEventOut
from bastion.service.devicestatus.service import update_history
from bastion.service.fleet.limits import FleetLimitsDep
from bastion.service.web import LimitQuery, NowDep, OffsetQuery, SessionDep, SettingsDep

router = APIRouter(tags=["devices"])


@router.post("/devices/claim", status_code=201)
def claim(body: ClaimRequest, who: ContributorDep, session: SessionDep, now: NowDep) -> DeviceOut:
    return DeviceOut.model_validate(service.claim_device(session, who, body.device_id, now=now))


@router.get("/devices")
def list_devices(
    who: ReaderDep,
    session: SessionDep,
    settings: SettingsDep,
    limit: LimitQuery = None,
    offset: OffsetQuery = 0,
) -> list[DeviceOut]:
    bound = settings.limits.page(limit)
    return [DeviceOut.model_validate(d) for d in service.list_devices(session, who, limit=bound, offset=offset)]


@router.get("/devices/{device_id}")
def show(
    device_id: str, who: ReaderDep, *, session: SessionDep, settings: SettingsDep, now: NowDep, limits: FleetLimitsDep
) -> DeviceDetail:
    device = service.get_device_for(session, who, device_id, action="device.read", now=now)
    records = service.recent_attestations(session, who, device_id, limit=settings.limits.recent_attestations)
    history = update_history(session, who.tenant_id, device_id, limit=limits.update_history_rows)
    return DeviceDetail(
        **DeviceOut.model_validate(device).model_dump(),
        attestations=[AttestationOut.model_validate(a) for a in records],
        update_history=[UpdateEventOut.model_validate(e) for e in history],
    )


@router.post("/devices/{device_id}/revoke")
def revoke(device_id: str, who: ContributorDep, session: SessionDep, now: NowDep) -> DeviceOut:
    return DeviceOut.model_validate(service.revoke_device(session, who, device_id, now=now))
