"""HTTP endpoints: claim (with proof), unclaim, release, ownership history, list, show and revoke devices."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated

from fastapi import APIRouter, Query

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.ca.crl import publish_tenant_crls
from bastion.service.devices import service
from bastion.service.devices.schemas import (
    AttestationOut,
    ClaimChallengeOut,
    ClaimChallengeRequest,
    ClaimRequest,
    DeviceDetail,
    DeviceOut,
    OwnershipEventOut,
    RefusedDeviceOut,
    ReleaseRequest,
    UpdateEventOut,
    VoucherClaimOut,
    VoucherClaimRequest,
)
from bastion.service.devicestatus.service import update_history
from bastion.service.errors import InvalidRequest, ServiceError
from bastion.service.fleet.limits import FleetLimitsDep
from bastion.service.ownership import service as ownership
from bastion.service.ownership.challenge import ClaimKey
from bastion.service.web import LimitQuery, NowDep, OffsetQuery, SessionDep, SettingsDep

router = APIRouter(tags=["devices"])
_log = logging.getLogger(__name__)


def _b64(text: str, what: str) -> bytes:
    """Decode base64 in the url or the standard alphabet, padding optional."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{what} is not base64; send the file's bytes base64-encoded") from exc


@router.post("/devices/claim/challenge")
def claim_challenge(
    body: ClaimChallengeRequest, who: ContributorDep, settings: SettingsDep, now: NowDep
) -> ClaimChallengeOut:
    issued = ownership.claim_challenge(who, body.device_id, key=ClaimKey.from_master_key(settings.master_key), now=now)
    return ClaimChallengeOut(
        device_id=issued.device_id,
        tenant_id=issued.tenant_id,
        nonce=base64.urlsafe_b64encode(issued.nonce).rstrip(b"=").decode("ascii"),
        expires_at=issued.expires_at,
    )


@router.post("/devices/claim", status_code=201)
def claim(
    body: ClaimRequest, who: ContributorDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> DeviceOut:
    if body.evidence is None:
        raise InvalidRequest(
            "a claim needs proof, a device ID alone is not enough: claim with the device at hand "
            "('bastion device claim --dir DEV') or with the vendor's voucher ('bastion device claim --voucher FILE')",
            code="proof_required",
        )
    token = _b64(body.evidence, "evidence")
    key = ClaimKey.from_master_key(settings.master_key)
    return DeviceOut.model_validate(ownership.claim_with_evidence(session, who, token, key=key, now=now))


@router.post("/devices/claim/voucher", status_code=201)
def claim_voucher(body: VoucherClaimRequest, who: ContributorDep, session: SessionDep, now: NowDep) -> VoucherClaimOut:
    result = ownership.claim_with_voucher(session, who, _b64(body.voucher, "voucher"), now=now)
    return VoucherClaimOut(
        voucher_id=result.voucher_id,
        claimed=[DeviceOut.model_validate(d) for d in result.claimed],
        refused=[RefusedDeviceOut(device_id=d, error=e, detail=t) for d, e, t in result.refused],
    )


@router.post("/devices/{device_id}/unclaim")
def unclaim(
    device_id: str, who: ContributorDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> OwnershipEventOut:
    out = OwnershipEventOut.model_validate(ownership.unclaim_device(session, who, device_id, now=now))
    _publish_crls(session, who.tenant_id, settings, now)
    return out


@router.post("/devices/{device_id}/release")
def release(
    device_id: str,
    body: ReleaseRequest,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> OwnershipEventOut:
    event = ownership.release_device(session, who, device_id, body.to_tenant, now=now)
    out = OwnershipEventOut.model_validate(event)
    _publish_crls(session, who.tenant_id, settings, now)
    return out


@router.get("/devices/{device_id}/ownership")
def ownership_history(
    device_id: str,
    who: ReaderDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[OwnershipEventOut]:
    events = ownership.ownership_history(session, who, device_id, limit=settings.limits.page(limit), offset=offset)
    out = []
    for event in events:
        item = OwnershipEventOut.model_validate(event)
        if event.tenant_id != who.tenant_id:
            item.actor = ""  # another tenant's token IDs are not the caller's business
        out.append(item)
    return out


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
def revoke(device_id: str, who: ContributorDep, session: SessionDep, settings: SettingsDep, now: NowDep) -> DeviceOut:
    out = DeviceOut.model_validate(service.revoke_device(session, who, device_id, now=now))
    _publish_crls(session, who.tenant_id, settings, now)
    return out


def _publish_crls(session: SessionDep, tenant_id: str, settings: SettingsDep, now: NowDep) -> None:
    """Re-sign the tenant's CRLs after a committed revocation (revoke, unclaim, release), so it is on them at once."""
    try:
        publish_tenant_crls(session, tenant_id, master_key=settings.master_key, now=now)
    except ServiceError as exc:  # the revocation is committed; the CRL refresh task re-signs within a minute
        _log.warning("CRL publish after a revocation failed: %s (%s)", exc.detail, exc.code)
