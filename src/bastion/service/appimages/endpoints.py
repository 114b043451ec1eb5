"""HTTP endpoints: app-signing keys and app image uploads (streamed, bounded)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from bastion.service.appimages import keys
from bastion.service.appimages.schemas import AppImageOut, AppKeyCreate, AppKeyOut
from bastion.service.appimages.service import add_app_image, find_images_for, list_app_images
from bastion.service.audit.service import record
from bastion.service.auth.deps import AdminDep, ContributorDep, ReaderDep
from bastion.service.errors import NotFound
from bastion.service.fleet.limits import FleetLimitsDep
from bastion.service.fleet.targets import blob_store
from bastion.service.fleet.upload import receive_upload
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["APP_UPLOAD_PATH", "router"]

router = APIRouter(tags=["app-images"])

#: Path whose bodies are streamed here rather than bounded by the generic middleware.
APP_UPLOAD_PATH = "/app-images"


@router.post("/app-signing-keys", status_code=201)
def register_key(
    body: AppKeyCreate, who: AdminDep, session: SessionDep, now: NowDep, limits: FleetLimitsDep
) -> AppKeyOut:
    row = keys.register_key(
        session, who, body.name, body.public_key_pem, now=now, max_pem_bytes=limits.max_public_key_pem_bytes
    )
    return AppKeyOut.model_validate(row)


@router.get("/app-signing-keys")
def list_keys(who: ReaderDep, session: SessionDep) -> list[AppKeyOut]:
    return [AppKeyOut.model_validate(k) for k in keys.list_keys(session, who)]


@router.post(APP_UPLOAD_PATH, status_code=201)
async def upload(
    request: Request,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    limits: FleetLimitsDep,
) -> AppImageOut:
    async with receive_upload(
        request, limit=limits.max_app_image_bytes, spool_bytes=settings.limits.upload_spool_bytes, what="app image"
    ) as received:
        image = await run_in_threadpool(
            add_app_image,
            session,
            who,
            received.file,
            sha256=received.sha256,
            size=received.size,
            store=blob_store(settings),
            max_bytes=limits.max_app_image_bytes,
            now=now,
        )
    return AppImageOut.model_validate(image)


@router.get(APP_UPLOAD_PATH)
def list_images(
    who: ReaderDep, session: SessionDep, settings: SettingsDep, limit: Annotated[int | None, Query(ge=1)] = None
) -> list[AppImageOut]:
    bound = settings.limits.page(limit)
    return [AppImageOut.model_validate(i) for i in list_app_images(session, who, limit=bound)]


@router.get(APP_UPLOAD_PATH + "/{ref}")
def show_image(ref: str, who: ReaderDep, session: SessionDep, now: NowDep) -> AppImageOut:
    """One app image of the caller's tenant, by id or SHA-256."""
    (image,) = find_images_for(session, who, [ref[:100]], now=now, action="app_image.read")
    return AppImageOut.model_validate(image)


@router.get(APP_UPLOAD_PATH + "/{ref}/content")
def download_image(ref: str, who: ReaderDep, session: SessionDep, settings: SettingsDep, now: NowDep) -> FileResponse:
    """The bytes of one app image (the signed package as uploaded); the client checks them against ``sha256``."""
    (image,) = find_images_for(session, who, [ref[:100]], now=now, action="app_image.download")
    path = blob_store(settings).path(image.sha256)
    if not path.is_file():
        raise NotFound(f"the bytes of app image {image.id} are not in the blob store", code="blob_missing")
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="app_image.download",
        target=f"app_image:{image.id}",
        detail=f"sha256={image.sha256}",
    )
    session.commit()
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"X-Bastion-SHA256": image.sha256, "Cache-Control": "no-store"},
    )
