"""HTTP endpoint: ``POST /device/download-credential`` (device-signed, no operator token)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bastion.service.eligibility.credential import DownloadKey
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.eligibility.service import DEFAULT_CREDENTIAL_LIMITS, CredentialLimits, issue_credential
from bastion.service.errors import PayloadTooLarge
from bastion.service.web import NowDep, SessionDep, error_response

__all__ = ["CREDENTIAL_CONTENT_TYPE", "CREDENTIAL_PATH", "DownloadCredentialOut", "Eligibility", "router"]

router = APIRouter(tags=["device-updates"])

#: Path under the API prefix.
CREDENTIAL_PATH = "/device/download-credential"
#: The media type of a credential request (RFC 9052 COSE).
CREDENTIAL_CONTENT_TYPE = "application/cose"


class Eligibility:
    """Per-app state of the slice: the derived key, the bounds, the refusal log (``app.state.eligibility``)."""

    def __init__(self, master_key: bytes, limits: CredentialLimits = DEFAULT_CREDENTIAL_LIMITS) -> None:
        """Derive the download key from ``master_key``."""
        self.key = DownloadKey.from_master_key(master_key)
        self.limits = limits
        self.refusals = RefusalLog()


def get_eligibility(request: Request) -> Eligibility:
    """The app's :class:`Eligibility` (built by ``create_app``)."""
    state: Eligibility = request.app.state.eligibility
    return state


EligibilityDep = Annotated[Eligibility, Depends(get_eligibility)]


class DownloadCredentialOut(BaseModel):
    """A download credential: send it as ``Authorization: Bastion-Download <credential>``."""

    credential: str = Field(max_length=512)
    device_id: str
    group_id: str
    expires_at: dt.datetime
    #: Seconds from now until it expires (the device times it with its own monotonic clock).
    expires_in_s: int


@router.post(CREDENTIAL_PATH, response_model=DownloadCredentialOut)
async def download_credential(
    request: Request, session: SessionDep, now: NowDep, eligibility: EligibilityDep
) -> DownloadCredentialOut | JSONResponse:
    """A short-lived credential that opens the device's group's TUF targets, if the device is in good standing."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != CREDENTIAL_CONTENT_TYPE:
        return error_response(415, "unsupported_media_type", f"send the request as {CREDENTIAL_CONTENT_TYPE}")
    bound = eligibility.limits.max_request_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > bound:
            raise PayloadTooLarge(f"a credential request is at most {bound} bytes", code="request_too_large")
    issued = await run_in_threadpool(
        issue_credential,
        session,
        bytes(body),
        now=now,
        key=eligibility.key,
        refusals=eligibility.refusals,
        limits=eligibility.limits,
    )
    return DownloadCredentialOut(
        credential=issued.credential,
        device_id=issued.device_id,
        group_id=issued.group_id,
        expires_at=issued.expires_at,
        expires_in_s=max(int((issued.expires_at - now).total_seconds()), 0),
    )
