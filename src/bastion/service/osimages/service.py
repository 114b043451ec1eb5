"""Publishing known-good OS images (per tenant reference values) on OS feeds, and promoting them.

The measurement is the SHA-256 of the whole package file, the same value
DICE measures on the device. The service does not check the publisher
signature (devices do, against their pinned key); it records which exact
images this tenant vouches for, keeps the file in the blob store (the TUF
repositories serve it), and republishes the groups whose OS target changes.

Every published image, on any feed, is known-good for attestation until
revoked; the feed only decides which groups are offered it as an update.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.images.errors import ImageError
from bastion.images.package import ImageType, inspect_image
from bastion.service.audit.service import record, record_denied
from bastion.service.auth.service import Principal
from bastion.service.blobs.store import BlobStore, BlobTooLargeError
from bastion.service.config import Settings
from bastion.service.errors import Conflict, DuplicateOsImage, InvalidImage, InvalidRequest, NotFound, PayloadTooLarge
from bastion.service.fleet.policy import OsFeed, parse_feed
from bastion.service.fleet.targets import Publisher, blob_store, republish_feeds
from bastion.service.models import OsImage

__all__ = ["list_os_images", "promote_os_image", "publish_os_image"]

_MEASUREMENT = re.compile(r"[0-9a-f]{64}")


def publish_os_image(
    session: Session,
    who: Principal,
    stream: BinaryIO,
    *,
    measurement: str,
    size: int,
    now: dt.datetime,
    feed: str = OsFeed.RETAIL.value,
    settings: Settings | None = None,
    publisher: Publisher | None = None,
) -> OsImage:
    """Register an uploaded OS image as known-good for the caller's tenant, on ``feed``; commit.

    With ``settings`` and ``publisher``, the image file is kept in the blob store
    and every group of the tenant that sees the feed is republished.

    Args:
        session: database session.
        who: the caller.
        stream: the uploaded package, seekable, positioned at its start.
        measurement: lowercase hex SHA-256 of the whole upload (computed while receiving it).
        size: the upload's size in bytes.
        now: current time.
        feed: ``retail`` (default) or ``retail-eval``.
        settings: service settings (blob store location, upload bound).
        publisher: the TUF publisher.

    Raises:
        InvalidImage: not an image package, or not an OS image.
        InvalidRequest: unknown feed.
        DuplicateOsImage: the same measurement is already published for this tenant.
    """
    os_feed = parse_feed(feed)
    try:
        header = inspect_image(stream)
    except ImageError as exc:
        raise InvalidImage(f"not a Bastion image package: {exc}") from exc
    if header.image_type is not ImageType.OS:
        raise InvalidImage(
            f"this is an image of type {header.image_type.value!r}; only 'os' images can be published here"
        )
    target = f"os_image:{measurement}"
    duplicate = session.scalar(
        select(OsImage.id).where(OsImage.tenant_id == who.tenant_id, OsImage.measurement == measurement)
    )
    if duplicate is not None:
        _deny_duplicate(session, who, target, now=now)
    if settings is not None:
        _store(blob_store(settings), stream, measurement, size, settings.limits.max_image_upload_bytes)
    image = OsImage(
        tenant_id=who.tenant_id,
        measurement=measurement,
        component_id=header.component_id,
        version=header.version,
        security_version=header.security_version,
        size=size,
        published_at=now,
        feed=os_feed.value,
    )
    session.add(image)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent upload of the same image
        session.rollback()
        _deny_duplicate(session, who, target, now=now, cause=exc)
    groups = 0
    if settings is not None and publisher is not None:
        # A retail image is visible on both feeds; an evaluation image only on retail-eval.
        feeds = [OsFeed.RETAIL, OsFeed.RETAIL_EVAL] if os_feed is OsFeed.RETAIL else [OsFeed.RETAIL_EVAL]
        groups = republish_feeds(session, settings, who.tenant_id, feeds, now=now, publisher=publisher)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="os_image.publish",
        target=target,
        detail=f"version={header.version} security_version={header.security_version} feed={os_feed} groups={groups}",
    )
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        _deny_duplicate(session, who, target, now=now, cause=exc)
    return image


def _store(store: BlobStore, stream: BinaryIO, measurement: str, size: int, limit: int) -> None:
    stream.seek(0)
    try:
        ref = store.put_stream(stream, limit=limit)
    except BlobTooLargeError as exc:
        raise PayloadTooLarge(f"the image is larger than the upload limit of {limit} bytes") from exc
    if ref.sha256 != measurement or ref.size != size:
        raise InvalidImage("the upload changed while it was being stored; try again")


def _deny_duplicate(
    session: Session, who: Principal, target: str, *, now: dt.datetime, cause: Exception | None = None
) -> None:
    record_denied(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="os_image.publish",
        target=target,
        detail="duplicate",
    )
    raise DuplicateOsImage("this OS image is already published as known-good for your tenant") from cause


def list_os_images(session: Session, who: Principal, *, limit: int) -> Sequence[OsImage]:
    """The caller's known-good OS images, newest first."""
    query = select(OsImage).where(OsImage.tenant_id == who.tenant_id).order_by(OsImage.id.desc()).limit(limit)
    return session.scalars(query).all()


def _find(session: Session, who: Principal, ref: str) -> OsImage:
    ref = ref.strip()
    column = OsImage.measurement if _MEASUREMENT.fullmatch(ref.lower()) else OsImage.version
    value = ref.lower() if column is OsImage.measurement else ref
    rows = session.scalars(
        select(OsImage).where(OsImage.tenant_id == who.tenant_id, column == value, OsImage.revoked_at.is_(None))
    ).all()
    if not rows:
        raise NotFound(f"no published OS image {ref[:64]!r} in your tenant; list them with 'bastion os list'")
    if len(rows) > 1:
        raise InvalidRequest(
            f"{len(rows)} OS images have version {ref[:64]!r}; name the one to promote by its measurement",
            code="ambiguous_os_image",
        )
    return rows[0]


def promote_os_image(
    session: Session,
    who: Principal,
    ref: str,
    *,
    to: str,
    settings: Settings,
    now: dt.datetime,
    publisher: Publisher,
) -> OsImage:
    """Put a retail-eval OS image (by version or measurement) on the retail feed too; republish; commit.

    Raises:
        InvalidRequest: ``to`` is not ``retail``, or the version names several images.
        NotFound: no such (non-revoked) image in the caller's tenant.
        Conflict: it is on retail already (``already_on_feed``).
    """
    if parse_feed(to) is not OsFeed.RETAIL:
        raise InvalidRequest("OS images are promoted to the retail feed only (--to retail)", code="invalid_feed")
    image = _find(session, who, ref)
    if image.feed == OsFeed.RETAIL.value or image.promoted_at is not None:
        raise Conflict(f"OS {image.version} ({image.measurement[:16]}…) is on retail already", code="already_on_feed")
    image.promoted_at = now
    session.flush()
    groups = republish_feeds(session, settings, who.tenant_id, [OsFeed.RETAIL], now=now, publisher=publisher)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="os_image.promote",
        target=f"os_image:{image.measurement}",
        detail=f"version={image.version} to=retail groups={groups}",
    )
    session.commit()
    return image
