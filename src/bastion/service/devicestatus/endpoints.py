"""HTTP endpoints: ``POST /device/status`` (device-signed) and a device's deployment status (operator)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion.service.auth.deps import ReaderDep
from bastion.service.devices.service import get_device_for
from bastion.service.devicestatus import service
from bastion.service.devicestatus.schemas import DeploymentStatusOut, StatusAccepted, UpdateEventOut, UpdateStatusOut
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errors import PayloadTooLarge
from bastion.service.fleet.limits import FleetLimitsDep
from bastion.service.web import NowDep, SessionDep, error_response

__all__ = ["STATUS_CONTENT_TYPE", "router"]

router = APIRouter(tags=["device-status"])

#: The media type of a status report (RFC 9052 COSE).
STATUS_CONTENT_TYPE = "application/cose"


@router.post("/device/status", response_model=StatusAccepted)
async def report_status(
    request: Request, session: SessionDep, now: NowDep, limits: FleetLimitsDep
) -> StatusAccepted | JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != STATUS_CONTENT_TYPE:
        return error_response(415, "unsupported_media_type", f"send the report as {STATUS_CONTENT_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_status_bytes:
            raise PayloadTooLarge(
                f"a status report is at most {limits.max_status_bytes} bytes", code="status_too_large"
            )
    refusals = getattr(request.app.state, "status_refusals", None)
    if refusals is None:
        refusals = request.app.state.status_refusals = RefusalLog()
    status = await run_in_threadpool(
        service.accept_report, session, bytes(body), now=now, limits=limits, refusals=refusals
    )
    return StatusAccepted(accepted=True, device_id=status.device_id, reported_at=status.reported_at)


@router.get("/devices/{device_id}/deployment-status")
def deployment_status(
    device_id: str, who: ReaderDep, session: SessionDep, now: NowDep, limits: FleetLimitsDep
) -> DeploymentStatusOut:
    device = get_device_for(session, who, device_id, action="device.read", now=now)
    status = service.device_status(session, who.tenant_id, device_id)
    history = service.update_history(session, who.tenant_id, device_id, limit=limits.update_history_rows)
    return DeploymentStatusOut(
        device_id=device.device_id,
        group_id=device.group_id,
        status=UpdateStatusOut.model_validate(status) if status else None,
        history=[UpdateEventOut.model_validate(e) for e in history],
    )
