"""HTTP endpoints: ``POST /os-images`` (streamed, bounded upload, ``?feed=``), ``GET /os-images``,
``POST /os-feeds/{feed}/images`` (promotion) and ``POST /os-images/{ref}/revoke``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.fleet.targets import PublisherDep
from bastion.service.fleet.upload import receive_upload
from bastion.service.osimages.schemas import OsImageOut, OsRevokeOut, PromoteOut, PromoteRequest
from bastion.service.osimages.service import list_os_images, promote_os_image, publish_os_image, revoke_os_image
from bastion.service.web import NowDep, SessionDep, SettingsDep

router = APIRouter(tags=["os-images"])

#: Path prefix whose bodies are streamed here rather than bounded by the generic middleware.
UPLOAD_PATH = "/os-images"
#: Bound on a list offset (far beyond any real list; keeps the SQL integer in range).
MAX_OFFSET = 10**9


@router.post(UPLOAD_PATH, status_code=201)
async def upload(
    request: Request,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    feed: Annotated[str, Query(max_length=40)] = "retail",
) -> OsImageOut:
    limits = settings.limits
    async with receive_upload(
        request, limit=limits.max_image_upload_bytes, spool_bytes=limits.upload_spool_bytes, what="image"
    ) as received:
        image = await run_in_threadpool(
            publish_os_image,
            session,
            who,
            received.file,
            measurement=received.sha256,
            size=received.size,
            now=now,
            feed=feed,
            settings=settings,
            publisher=pub,
        )
    return OsImageOut.model_validate(image)


@router.get(UPLOAD_PATH)
def list_images(
    who: ReaderDep,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[OsImageOut]:
    bound = settings.limits.page(limit)
    return [OsImageOut.model_validate(i) for i in list_os_images(session, who, limit=bound, offset=offset)]


@router.post("/os-feeds/{feed}/images")
def promote(
    feed: str,
    body: PromoteRequest,
    *,
    who: ContributorDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
) -> PromoteOut:
    plan = None if body.rollout is None else body.rollout.plan()
    image, staged = promote_os_image(
        session, who, body.image, to=feed[:40], settings=settings, now=now, publisher=pub, rollout=plan
    )
    return PromoteOut(**OsImageOut.model_validate(image).model_dump(), rollouts=[r.id for r in staged])


@router.post(UPLOAD_PATH + "/{ref}/revoke")
def revoke(
    ref: Annotated[str, Path(min_length=1, max_length=100, description="version or measurement (hex SHA-256)")],
    *,
    who: ContributorDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
) -> OsRevokeOut:
    """Revoke an OS image: no longer known-good, and off every feed (no request body)."""
    revoked = revoke_os_image(session, who, ref, settings=settings, now=now, publisher=pub)
    return OsRevokeOut(revoked=[OsImageOut.model_validate(i) for i in revoked])
