"""Ownership-history queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from bastion.service.models import (
    DeviceCapability,
    DeviceLogRequest,
    DeviceOwnershipEvent,
    DeviceReleaseActivity,
    DeviceUpdateStatus,
    ErrorBucketDevice,
    ErrorBucketVersionDevice,
    ErrorEvent,
    ErrorReportBatch,
    OsBlocklistClear,
)

__all__ = ["delete_device_dependents", "history_for", "latest_event", "voucher_used"]


def latest_event(session: Session, device_id: str) -> DeviceOwnershipEvent | None:
    """The device's most recent ownership event, whichever tenant it concerns."""
    query = (
        select(DeviceOwnershipEvent)
        .where(DeviceOwnershipEvent.device_id == device_id)
        .order_by(DeviceOwnershipEvent.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def voucher_used(session: Session, device_id: str, voucher_id: str) -> bool:
    """True if a claim of ``device_id`` already used the voucher ``voucher_id``."""
    query = select(DeviceOwnershipEvent.id).where(
        DeviceOwnershipEvent.device_id == device_id,
        DeviceOwnershipEvent.event == "claim",
        DeviceOwnershipEvent.voucher_id == voucher_id,
    )
    return session.scalars(query.limit(1)).first() is not None


def history_for(
    session: Session, tenant_id: str, device_id: str, *, limit: int, offset: int = 0
) -> Sequence[DeviceOwnershipEvent]:
    """The device's ownership events that concern ``tenant_id`` (as owner or release target), newest first."""
    query = (
        select(DeviceOwnershipEvent)
        .where(
            DeviceOwnershipEvent.device_id == device_id,
            or_(DeviceOwnershipEvent.tenant_id == tenant_id, DeviceOwnershipEvent.to_tenant_id == tenant_id),
        )
        .order_by(DeviceOwnershipEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return session.scalars(query).all()


def delete_device_dependents(session: Session, device_id: str) -> tuple[list[str], int]:
    """Delete the rows that belong to the device's current ownership.

    Those are its capabilities, update status and error-report rows (raw events,
    batches, per-bucket counters and release activity; a bucket's totals stay,
    they carry no device ID), its log requests and the OS blocklist clears made for
    it alone (a group-wide clear stays; the group's signed targets drop the device's
    at their next publish, and a new owner's device never inherits the old owner's clear).

    Returns:
        The IDs of the deleted capabilities (a missing capability row reads as
        revoked at attestation) and how many update-status rows went.
    """
    capability_ids = list(
        session.scalars(select(DeviceCapability.id).where(DeviceCapability.device_id == device_id)).all()
    )
    session.execute(delete(DeviceCapability).where(DeviceCapability.device_id == device_id))
    status = session.execute(delete(DeviceUpdateStatus).where(DeviceUpdateStatus.device_id == device_id))
    # Error reports (migration 0015): events before the batches they reference.
    for table in (ErrorEvent, ErrorReportBatch, ErrorBucketDevice, ErrorBucketVersionDevice, DeviceReleaseActivity):
        session.execute(delete(table).where(table.device_id == device_id))
    # Device log requests (migration 0016): the uploaded tails are the old owner's.
    session.execute(delete(DeviceLogRequest).where(DeviceLogRequest.device_id == device_id))
    # Per-device OS blocklist clears (migration 0018): an operator's decision about this ownership.
    session.execute(delete(OsBlocklistClear).where(OsBlocklistClear.device_id == device_id))
    return capability_ids, int(getattr(status, "rowcount", 0) or 0)
