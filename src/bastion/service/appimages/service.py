"""Adding app image packages: verified against the tenant's app keys, stored by SHA-256.

The service checks what it can before a device ever sees the image: it is an
``app`` package, signed by one of the tenant's registered app-signing keys,
with an intact payload. Devices check the signature again against their own
pinned keys, so this check is for the operator's benefit, not the device's trust.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import BinaryIO, NoReturn

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.images.errors import ImageError, ImageSignatureError
from bastion.images.package import ImageLimits, ImageType, inspect_image, verify_image
from bastion.service.appimages.keys import tenant_app_keys
from bastion.service.audit.service import record, record_denied, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.blobs.store import BlobStore, BlobTooLargeError
from bastion.service.errors import Conflict, InvalidImage, InvalidRequest, NotFound, PayloadTooLarge
from bastion.service.models import AppImage

__all__ = ["add_app_image", "find_images_for", "list_app_images"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_ID_DIGITS = 12


def add_app_image(
    session: Session,
    who: Principal,
    stream: BinaryIO,
    *,
    sha256: str,
    size: int,
    store: BlobStore,
    max_bytes: int,
    now: dt.datetime,
) -> AppImage:
    """Verify, store and record an uploaded app image for the caller's tenant; commit.

    Args:
        session: database session.
        who: the caller.
        stream: the uploaded package, seekable, at its start.
        sha256: lowercase hex SHA-256 of the upload (computed while receiving it).
        size: its size in bytes.
        store: the blob store.
        max_bytes: the upload bound (the stored blob is bounded the same).
        now: current time.

    Raises:
        InvalidImage: not an image package, not of type ``app``, or a broken payload.
        InvalidRequest: signed by a key the tenant has not registered (``unknown_signer``).
        Conflict: the same image, or another one with the same component and version (``duplicate_app_image``).
    """
    limits = ImageLimits(max_payload_bytes=max_bytes)
    target = f"app_image:{sha256}"

    def refuse(error: InvalidRequest, detail: str) -> NoReturn:
        # Every refused upload is on the record (issue 7, section 5), then raised.
        record_denied(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="app_image.add",
            target=target,
            detail=detail,
        )
        raise error

    try:
        header = inspect_image(stream, limits=limits)
    except ImageError as exc:
        refuse(InvalidImage(f"not a Bastion image package: {exc}"), "not an image package")
    if header.image_type is not ImageType.APP:
        refuse(
            InvalidImage(
                f"this is an image of type {header.image_type.value!r}; 'image add' takes app images "
                "(publish OS images with 'bastion os publish')"
            ),
            f"image type {header.image_type.value}",
        )
    keys = tenant_app_keys(session, who.tenant_id)
    signer = header.signer.hex()
    key = keys.get(signer)
    if key is None:
        refuse(
            InvalidRequest(
                f"the image is signed by key {signer[:16]}…, which is not registered for your tenant; "
                "register its public half with 'bastion keys register KEY.pub.pem'",
                code="unknown_signer",
            ),
            f"unknown signer {signer}",
        )
    stream.seek(0)
    try:
        verify_image(stream, [key], limits=limits)
    except ImageSignatureError as exc:
        refuse(InvalidImage(f"the image signature does not verify: {exc}"), "bad signature")
    except ImageError as exc:
        refuse(InvalidImage(f"the image is damaged: {exc}"), f"damaged: {exc}")
    dup = session.scalar(
        select(AppImage.id).where(
            AppImage.tenant_id == who.tenant_id,
            or_(
                AppImage.sha256 == sha256,
                (AppImage.component_id == header.component_id) & (AppImage.version == header.version),
            ),
        )
    )
    if dup is not None:
        _deny_duplicate(session, who, target, header.component_id, header.version, now=now)
    stream.seek(0)
    try:
        ref = store.put_stream(stream, limit=max_bytes)
    except BlobTooLargeError as exc:
        raise PayloadTooLarge(f"the image is larger than the upload limit of {max_bytes} bytes") from exc
    if ref.sha256 != sha256 or ref.size != size:
        raise InvalidImage("the upload changed while it was being stored; try again")
    image = AppImage(
        tenant_id=who.tenant_id,
        sha256=sha256,
        component_id=header.component_id,
        version=header.version,
        security_version=header.security_version,
        size=size,
        signer_key_id=signer,
        uploaded_at=now,
        uploaded_by=who.actor,
    )
    session.add(image)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="app_image.add",
        target=target,
        detail=f"component={header.component_id} version={header.version}",
    )
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent upload of the same image
        session.rollback()
        _deny_duplicate(session, who, target, header.component_id, header.version, now=now, cause=exc)
    return image


def _deny_duplicate(
    session: Session,
    who: Principal,
    target: str,
    component_id: str,
    version: str,
    *,
    now: dt.datetime,
    cause: Exception | None = None,
) -> None:
    record_denied(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="app_image.add",
        target=target,
        detail="duplicate",
    )
    raise Conflict(
        f"your tenant already has this image, or another image of component {component_id} version {version}; "
        "build the new one with a higher --version",
        code="duplicate_app_image",
    ) from cause


def list_app_images(session: Session, who: Principal, *, limit: int) -> Sequence[AppImage]:
    """The caller's app images, newest first."""
    query = select(AppImage).where(AppImage.tenant_id == who.tenant_id).order_by(AppImage.id.desc()).limit(limit)
    return session.scalars(query).all()


def find_images_for(
    session: Session, who: Principal, refs: Sequence[str], *, now: dt.datetime, action: str = "deployment.create"
) -> list[AppImage]:
    """The caller's app images named by id (decimal) or SHA-256, in order.

    Raises:
        NotFound: any of them is not the caller's (another tenant's is audited as denied).
    """
    images = []
    for raw in refs:
        ref = raw.strip().lower()
        if _SHA256.fullmatch(ref):
            rows = session.scalars(select(AppImage).where(AppImage.sha256 == ref)).all()
        elif ref.isascii() and ref.isdigit() and len(ref) <= _MAX_ID_DIGITS:  # '²'.isdigit() is True
            rows = session.scalars(select(AppImage).where(AppImage.id == int(ref))).all()
        else:
            raise InvalidRequest(f"{ref[:64]!r} is neither an image id nor a SHA-256", code="invalid_image_ref")
        mine = [r for r in rows if r.tenant_id == who.tenant_id]
        if not mine:
            # The same record whether the image is missing or another tenant's.
            record_not_found(
                session,
                now=now,
                tenant_id=who.tenant_id,
                actor=who.actor,
                action=action,
                target=f"app_image:{ref[:64]}",
            )
            raise NotFound(f"no app image {ref[:64]!r} in your tenant; list them with 'bastion image list'")
        images.append(mine[0])
    return images
