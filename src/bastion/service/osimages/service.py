"""Publishing known-good OS images (per tenant reference values) on OS feeds, and promoting them.

The measurement is the SHA-256 of the whole package file, the same value
DICE measures on the device. Before an image becomes known-good the service
verifies it completely (issue 7, section 5): its header signature against the
service's trusted OS-publisher keys (:mod:`bastion.service.vendors.os_keys`)
and its payload against the signed digest and size. Devices check the
signature again against their pinned key. The service then records which
exact images this tenant vouches for, keeps the file in the blob store (the
TUF repositories serve it), and republishes the groups whose OS target changes.
Every refused upload is an audit event (``os_image.publish``, denied).

Every published image, on any feed, is known-good for attestation until
revoked (:func:`revoke_os_image`); the feed only decides which groups are
offered it as an update. A revoked image leaves every feed at once, and a
device that measures it fails its next attestation with ``os_revoked``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, BinaryIO, NoReturn

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.images.errors import ImageError, ImageSignatureError
from bastion.images.package import ImageHeader, ImageLimits, ImageType, inspect_image, verify_image
from bastion.service.audit.service import record, record_denied
from bastion.service.auth.service import Principal
from bastion.service.blobs.store import BlobStore, BlobTooLargeError
from bastion.service.config import Settings
from bastion.service.errors import Conflict, DuplicateOsImage, InvalidImage, InvalidRequest, NotFound, PayloadTooLarge
from bastion.service.fleet import repository as fleet_repository
from bastion.service.fleet.policy import OsFeed, parse_feed
from bastion.service.fleet.targets import Publisher, blob_store, newest_os_images, republish_feeds
from bastion.service.models import OsImage, Rollout
from bastion.service.rollouts import service as rollouts
from bastion.service.rollouts.rules import RolloutPlan
from bastion.service.vendors.os_keys import os_publisher_key

__all__ = ["list_os_images", "promote_os_image", "publish_os_image", "revoke_os_image"]

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
        InvalidImage: not an image package, not an OS image, not signed by a
            trusted OS-publisher key, or damaged (see :func:`_verified_header`;
            each refusal is audited).
        InvalidRequest: unknown feed.
        DuplicateOsImage: the same measurement is already published for this tenant.
    """
    os_feed = parse_feed(feed)
    target = f"os_image:{measurement}"
    header = _verified_header(session, who, stream, target, settings=settings, now=now)
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
        signer_key_id=header.signer.hex(),
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


def _verified_header(
    session: Session,
    who: Principal,
    stream: BinaryIO,
    target: str,
    *,
    settings: Settings | None,
    now: dt.datetime,
) -> ImageHeader:
    """Parse and fully verify an uploaded OS package; a refusal is audited (denied) and raised.

    Raises:
        InvalidImage: not an image package (``invalid_image``), not an OS image
            (``invalid_image``), signed by a key that is no trusted OS publisher's
            (``unknown_os_publisher``), a signature that does not verify
            (``bad_image_signature``), or a payload that is truncated, too long
            or has another digest than the signed one (``damaged_image``).
    """
    limits = (
        ImageLimits() if settings is None else ImageLimits(max_payload_bytes=settings.limits.max_image_upload_bytes)
    )

    def refuse(detail: str, message: str, code: str, cause: Exception | None = None) -> NoReturn:
        record_denied(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="os_image.publish",
            target=target,
            detail=detail,
        )
        raise InvalidImage(message, code=code) from cause

    try:
        header = inspect_image(stream, limits=limits)
    except ImageError as exc:
        refuse("not an image package", f"not a Bastion image package: {exc}", "invalid_image", exc)
    if header.image_type is not ImageType.OS:
        refuse(
            f"image type {header.image_type.value}",
            f"this is an image of type {header.image_type.value!r}; only 'os' images can be published here",
            "invalid_image",
        )
    signer = header.signer.hex()
    key = os_publisher_key(session, signer)
    if key is None:
        refuse(
            f"unknown OS publisher key {signer}",
            f"the image is signed by key {signer[:16]}…, which is not a trusted OS-publisher key; the service "
            "operator trusts one with 'bastion service trust-os-publisher os-signing.pub.pem' "
            "(list them with 'bastion service os-publishers')",
            "unknown_os_publisher",
        )
    stream.seek(0)
    try:
        verify_image(stream, [key], limits=limits)
    except ImageSignatureError as exc:
        refuse(
            "bad signature",
            f"the image signature does not verify against OS-publisher key {signer[:16]}…: {exc}; "
            "rebuild it with 'bastion os build --key os-signing.key'",
            "bad_image_signature",
            exc,
        )
    except ImageError as exc:
        refuse(
            f"damaged: {exc}",
            f"the image is damaged ({exc}); upload the file exactly as 'bastion os build' wrote it",
            "damaged_image",
            exc,
        )
    stream.seek(0)
    return header


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


def list_os_images(session: Session, who: Principal, *, limit: int, offset: int = 0) -> Sequence[OsImage]:
    """The caller's OS images (known-good and revoked), newest first, one page."""
    query = (
        select(OsImage)
        .where(OsImage.tenant_id == who.tenant_id)
        .order_by(OsImage.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return session.scalars(query).all()


def _ref_column(ref: str) -> tuple[Any, str]:
    """The column a reference names (measurement if it is hex SHA-256, else version) and its value."""
    ref = ref.strip()
    if _MEASUREMENT.fullmatch(ref.lower()):
        return OsImage.measurement, ref.lower()
    return OsImage.version, ref


def _find(session: Session, who: Principal, ref: str) -> OsImage:
    ref = ref.strip()
    column, value = _ref_column(ref)
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
    rollout: RolloutPlan | None = None,
) -> tuple[OsImage, list[Rollout]]:
    """Put a retail-eval OS image (by version or measurement) on the retail feed too; republish; commit.

    With ``rollout``, each retail group gets a staged rollout of the image (docs/adr/0017);
    the OS the retail feed offered before is its fallback.

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
    before = newest_os_images(session, settings, who.tenant_id, OsFeed.RETAIL)
    image.promoted_at = now
    session.flush()
    staged: list[Rollout] = []
    if rollout is not None:
        staged = rollouts.create_for_os(
            session,
            who,
            image,
            groups=fleet_repository.groups_following(session, who.tenant_id, [OsFeed.RETAIL]),
            previous_image=before[0] if before else None,
            plan=rollout,
            now=now,
        )
    groups = republish_feeds(session, settings, who.tenant_id, [OsFeed.RETAIL], now=now, publisher=publisher)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="os_image.promote",
        target=f"os_image:{image.measurement}",
        detail=f"version={image.version} to=retail groups={groups}"
        + (f" rollouts={','.join(str(r.id) for r in staged)}" if staged else ""),
    )
    session.commit()
    return image, staged


def revoke_os_image(
    session: Session,
    who: Principal,
    ref: str,
    *,
    settings: Settings,
    now: dt.datetime,
    publisher: Publisher,
) -> list[OsImage]:
    """Revoke the caller's OS images named by version or measurement; republish both feeds; commit.

    A version names every image of the tenant with that version. A revoked
    image is no longer known-good: a device that measures it fails its next
    attestation with ``os_revoked`` (the attestation success write re-checks
    the image's standing atomically, so no cache outlives the revocation), and
    it leaves every group's TUF targets. Revocation is final; publish a fixed
    image under a new version.

    Raises:
        NotFound: no such image in the caller's tenant.
        Conflict: every image it names is revoked already (``already_revoked``).
    """
    column, value = _ref_column(ref)
    rows = session.scalars(
        select(OsImage).where(OsImage.tenant_id == who.tenant_id, column == value).order_by(OsImage.id)
    ).all()
    shown = ref.strip()[:64]
    if not rows:
        raise NotFound(f"no published OS image {shown!r} in your tenant; list them with 'bastion os list'")
    live = [row for row in rows if row.revoked_at is None]
    if not live:
        raise Conflict(f"OS image {shown!r} is revoked already", code="already_revoked")
    for image in live:
        image.revoked_at, image.revoked_by = now, who.actor
    session.flush()
    groups = republish_feeds(
        session, settings, who.tenant_id, [OsFeed.RETAIL, OsFeed.RETAIL_EVAL], now=now, publisher=publisher
    )
    for image in live:
        record(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="os_image.revoke",
            target=f"os_image:{image.measurement}",
            detail=f"version={image.version} groups={groups}",
        )
    session.commit()
    return live
