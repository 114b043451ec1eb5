"""HTTP endpoints of device log requests: the operator's ask and read, and the device's signed upload."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports import log_requests
from bastion.service.models import DeviceLogRequest
from bastion.service.web import NowDep, SessionDep, error_response

__all__ = ["LOG_CONTENT_TYPE", "LogRequestCreate", "LogRequestOut", "LogUploadAccepted", "router"]

router = APIRouter(tags=["device-logs"])

#: The media type of a log upload (RFC 9052 COSE).
LOG_CONTENT_TYPE = "application/cose"


class LogRequestCreate(BaseModel):
    component_id: str = Field(min_length=1, max_length=64, description="the app's component ID")


class LogRequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    request_id: str
    device_id: str
    component_id: str
    state: Literal["pending", "delivered", "expired"]
    requested_by: str
    requested_at: dt.datetime
    expires_at: dt.datetime
    max_bytes: int
    delivered_at: dt.datetime | None
    truncated: bool
    #: The uploaded tail (only in the single-request answer, once delivered).
    text: str | None = None


class LogUploadAccepted(BaseModel):
    request_id: str
    status: Literal["delivered", "duplicate"]


def _out(row: DeviceLogRequest, *, with_text: bool) -> LogRequestOut:
    return LogRequestOut(
        request_id=row.id,
        device_id=row.device_id,
        component_id=row.component_id,
        state=row.state,  # type: ignore[arg-type] # the column holds one of the three
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        max_bytes=row.max_bytes,
        delivered_at=row.delivered_at,
        truncated=bool(row.truncated),
        text=row.text if with_text else None,
    )


@router.post("/devices/{device_id}/log-requests", status_code=201)
def create_log_request(
    device_id: str, body: LogRequestCreate, who: ContributorDep, session: SessionDep, now: NowDep
) -> LogRequestOut:
    row = log_requests.create_request(session, who, device_id, component_id=body.component_id, now=now)
    return _out(row, with_text=False)


@router.get("/devices/{device_id}/log-requests")
def list_log_requests(device_id: str, who: ReaderDep, session: SessionDep, now: NowDep) -> list[LogRequestOut]:
    return [_out(r, with_text=False) for r in log_requests.list_requests(session, who, device_id, now=now)]


@router.get("/devices/{device_id}/log-requests/{request_id}")
def get_log_request(device_id: str, request_id: str, who: ReaderDep, session: SessionDep, now: NowDep) -> LogRequestOut:
    return _out(log_requests.get_request(session, who, device_id, request_id, now=now), with_text=True)


@router.post("/device/logs", response_model=LogUploadAccepted)
async def upload_log(request: Request, session: SessionDep, now: NowDep) -> LogUploadAccepted | JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != LOG_CONTENT_TYPE:
        return error_response(415, "unsupported_media_type", f"send the upload as {LOG_CONTENT_TYPE}")
    refusals = getattr(request.app.state, "log_upload_refusals", None)
    if refusals is None:
        refusals = request.app.state.log_upload_refusals = RefusalLog()
    bound = log_requests.DEFAULT_LOG_REQUEST_SETTINGS.max_upload_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > bound:
            break  # refused (413) and recorded by accept_upload's first check
    result = await run_in_threadpool(log_requests.accept_upload, session, bytes(body), now=now, refusals=refusals)
    return LogUploadAccepted(request_id=result.request_id, status=result.status)  # type: ignore[arg-type]
