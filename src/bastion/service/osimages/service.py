"""Publishing known-good OS images (per tenant reference values).

The measurement is the SHA-256 of the whole package file, the same value
DICE measures on the device. The service does not check the publisher
signature (devices do, against their pinned key); it only records which
exact images this tenant vouches for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.images.errors import ImageError
from bastion.images.package import ImageType, inspect_image
from bastion.service.audit.service import record, record_denied
from bastion.service.auth.service import Principal
from bastion.service.errors import DuplicateOsImage, InvalidImage
from bastion.service.models import OsImage

__all__ = ["list_os_images", "publish_os_image"]


def publish_os_image(
    session: Session, who: Principal, stream: BinaryIO, *, measurement: str, size: int, now: dt.datetime
) -> OsImage:
    """Register an uploaded OS image as known-good for the caller's tenant; commit.

    Args:
        session: database session.
        who: the caller.
        stream: the uploaded package, positioned at its start.
        measurement: lowercase hex SHA-256 of the whole upload (computed while receiving it).
        size: the upload's size in bytes.
        now: current time.

    Raises:
        InvalidImage: not an image package, or not an OS image.
        DuplicateOsImage: the same measurement is already published for this tenant.
    """
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
    image = OsImage(
        tenant_id=who.tenant_id,
        measurement=measurement,
        component_id=header.component_id,
        version=header.version,
        security_version=header.security_version,
        size=size,
        published_at=now,
    )
    session.add(image)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="os_image.publish",
        target=target,
        detail=f"version={header.version} security_version={header.security_version}",
    )
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent upload of the same image
        session.rollback()
        _deny_duplicate(session, who, target, now=now, cause=exc)
    return image


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
