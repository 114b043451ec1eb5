"""HTTP endpoints: ``POST /os-images`` (streamed, bounded upload) and ``GET /os-images``."""

from __future__ import annotations

import hashlib
import tempfile
from typing import Annotated, BinaryIO, cast

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.errors import PayloadTooLarge
from bastion.service.osimages.schemas import OsImageOut
from bastion.service.osimages.service import list_os_images, publish_os_image
from bastion.service.web import NowDep, SessionDep, SettingsDep

router = APIRouter(tags=["os-images"])

#: Path prefix whose bodies are streamed here rather than bounded by the generic middleware.
UPLOAD_PATH = "/os-images"


@router.post(UPLOAD_PATH, status_code=201)
async def upload(
    request: Request, who: ContributorDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> OsImageOut:
    limits = settings.limits
    declared = request.headers.get("content-length")
    too_large = PayloadTooLarge(f"the image is larger than the upload limit of {limits.max_image_upload_bytes} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_image_upload_bytes:
        raise too_large
    digest = hashlib.sha256()
    size = 0
    with tempfile.SpooledTemporaryFile(max_size=limits.upload_spool_bytes) as spool:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_image_upload_bytes:
                raise too_large
            digest.update(chunk)
            spool.write(chunk)
        spool.seek(0)
        image = await run_in_threadpool(
            publish_os_image, session, who, cast(BinaryIO, spool), measurement=digest.hexdigest(), size=size, now=now
        )
    return OsImageOut.model_validate(image)


@router.get(UPLOAD_PATH)
def list_images(
    who: ReaderDep, session: SessionDep, settings: SettingsDep, limit: Annotated[int | None, Query(ge=1)] = None
) -> list[OsImageOut]:
    bound = min(limit or settings.limits.list_page_size, settings.limits.list_max_page_size)
    return [OsImageOut.model_validate(i) for i in list_os_images(session, who, limit=bound)]
