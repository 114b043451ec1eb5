"""Clearing a device-side blocklisted OS image for a group or one device (issue 8 §6, ADR 0018).

A device blocklists an OS image whose trial failed (bounded retries, see
``bastion.os.updates.agent_state``). An operator who knows the image is good (the
failure was the service's, e.g. an ``unknown_os`` refusal after a half-done publish)
clears it: the clear is stored, audited and signed into the group's TUF targets
``custom`` as ``{"bastion": {"blocklist_clears": [{"id": "c<n>", "sha256", "devices": [id] | null}]}}``,
so it reaches the devices at their next check-in, as trustworthy as the targets
themselves. A device applies each clear id once.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.service.audit.service import record, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.config import Settings
from bastion.service.errors import InvalidRequest, NotFound
from bastion.service.fleet.service import get_group_for
from bastion.service.fleet.targets import Publisher, republish
from bastion.service.models import Device, OsBlocklistClear, OsImage

__all__ = ["clear_os_blocklist", "list_blocklist_clears"]

_MEASUREMENT = re.compile(r"[0-9a-f]{64}")
_DEVICE_ID = re.compile(r"[0-9a-f]{64}")


def _image(session: Session, who: Principal, ref: str) -> OsImage | None:
    query = select(OsImage).where(OsImage.tenant_id == who.tenant_id)
    if _MEASUREMENT.fullmatch(ref):
        query = query.where(OsImage.measurement == ref)
    else:
        query = query.where(OsImage.version == ref)
    return session.scalars(query.order_by(OsImage.id.desc())).first()


def clear_os_blocklist(
    session: Session,
    who: Principal,
    group_ref: str,
    image_ref: str,
    *,
    device_id: str | None,
    settings: Settings,
    now: dt.datetime,
    publisher: Publisher,
) -> OsBlocklistClear:
    """Clear a blocklisted OS image for a group (or one of its devices); republish; commit.

    Raises:
        InvalidRequest: a malformed device id.
        NotFound: no such group, image or device in the group (audited).
    """
    group = get_group_for(session, who, group_ref, action="os_blocklist.clear", now=now)
    image = _image(session, who, image_ref[:64])
    if image is None:
        record_not_found(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="os_blocklist.clear",
            target=f"os_image:{image_ref[:64]}",
        )
        raise NotFound(f"no OS image {image_ref[:64]!r} in your tenant; list them with 'bastion os list'")
    if device_id is not None:
        if not _DEVICE_ID.fullmatch(device_id):
            raise InvalidRequest("device_id must be 64 lowercase hex characters")
        device = session.get(Device, device_id)
        if device is None or device.tenant_id != who.tenant_id or device.group_id != group.id:
            record_not_found(
                session,
                now=now,
                tenant_id=who.tenant_id,
                actor=who.actor,
                action="os_blocklist.clear",
                target=f"device:{device_id}",
            )
            raise NotFound("no such device in that group")
    clear = OsBlocklistClear(
        tenant_id=who.tenant_id,
        group_id=group.id,
        sha256=image.measurement,
        version=image.version,
        device_id=device_id,
        created_at=now,
        created_by=who.actor,
    )
    session.add(clear)
    session.flush()
    republish(session, settings, group, now=now, publisher=publisher)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="os_blocklist.clear",
        target=f"device_group:{group.id}",
        detail=f"image={image.measurement} version={image.version} device={device_id or 'all'} id=c{clear.id}",
    )
    session.commit()
    return clear


def list_blocklist_clears(
    session: Session, who: Principal, group_ref: str, *, now: dt.datetime, limit: int
) -> Sequence[OsBlocklistClear]:
    """The group's clears, newest first."""
    group = get_group_for(session, who, group_ref, action="device_group.read", now=now)
    query = select(OsBlocklistClear).where(OsBlocklistClear.group_id == group.id)
    return session.scalars(query.order_by(OsBlocklistClear.id.desc()).limit(limit)).all()
