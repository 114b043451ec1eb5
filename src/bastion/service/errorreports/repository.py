"""Error-report queries for the operator surface (list, show, download)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from bastion.service.models import ErrorBucket, ErrorBucketDevice, ErrorBucketVersion, ErrorEvent

__all__ = [
    "SEVERE_CLASSES",
    "bucket_devices",
    "bucket_events",
    "bucket_versions",
    "events_between",
    "get_bucket",
    "list_buckets",
]

#: The event classes a bucket list shows by default (Info only when asked).
SEVERE_CLASSES = ("Error", "Warning")


def list_buckets(
    session: Session,
    tenant_id: str,
    *,
    state: str | None,
    component: str | None,
    version: str | None,
    category: str | None,
    since: dt.datetime | None,
    after: tuple[dt.datetime, str] | None,
    limit: int,
    include_info: bool = False,
) -> Sequence[ErrorBucket]:
    """Buckets newest ``last_seen`` first (ties by ID), after the cursor position ``after``.

    Without ``include_info`` a bucket whose raw events are all ``Info`` is left out. A bucket
    has no class of its own (records of one fingerprint may differ in class), so this asks the
    raw events; a bucket whose events were all rolled up is listed (shown, not hidden, when unsure).
    """
    query = select(ErrorBucket).where(ErrorBucket.tenant_id == tenant_id)
    if not include_info:
        events_of = ErrorEvent.bucket_id == ErrorBucket.id
        severe = select(ErrorEvent.id).where(events_of, ErrorEvent.event_class.in_(SEVERE_CLASSES)).exists()
        query = query.where(or_(severe, ~select(ErrorEvent.id).where(events_of).exists()))
    if state is not None:
        query = query.where(ErrorBucket.state == state)
    if component is not None:
        query = query.where(ErrorBucket.component_id == component)
    if category is not None:
        query = query.where(ErrorBucket.category == category)
    if since is not None:
        query = query.where(ErrorBucket.last_seen >= since)
    if version is not None:
        query = query.where(
            select(ErrorBucketVersion.bucket_id)
            .where(ErrorBucketVersion.bucket_id == ErrorBucket.id, ErrorBucketVersion.version == version)
            .exists()
        )
    if after is not None:
        seen, bid = after
        query = query.where(or_(ErrorBucket.last_seen < seen, (ErrorBucket.last_seen == seen) & (ErrorBucket.id > bid)))
    return session.scalars(query.order_by(ErrorBucket.last_seen.desc(), ErrorBucket.id).limit(limit)).all()


def get_bucket(session: Session, tenant_id: str, bucket_id: str) -> ErrorBucket | None:
    """The tenant's bucket, or None (another tenant's reads as missing)."""
    bucket = session.get(ErrorBucket, bucket_id)
    return bucket if bucket is not None and bucket.tenant_id == tenant_id else None


def _owned(tenant_id: str, bucket_id: str) -> ColumnElement[bool]:
    """The bucket is the tenant's (every per-bucket query carries it, not only :func:`get_bucket`)."""
    return select(ErrorBucket.id).where(ErrorBucket.id == bucket_id, ErrorBucket.tenant_id == tenant_id).exists()


def bucket_versions(session: Session, tenant_id: str, bucket_id: str) -> Sequence[ErrorBucketVersion]:
    """The tenant's bucket's per-version counters, newest ``last_seen`` first (none for another tenant's)."""
    query = select(ErrorBucketVersion).where(ErrorBucketVersion.bucket_id == bucket_id, _owned(tenant_id, bucket_id))
    return session.scalars(query.order_by(ErrorBucketVersion.last_seen.desc())).all()


def bucket_devices(session: Session, tenant_id: str, bucket_id: str, *, limit: int) -> Sequence[ErrorBucketDevice]:
    """A sample of the tenant's bucket's devices, most events first."""
    query = select(ErrorBucketDevice).where(ErrorBucketDevice.bucket_id == bucket_id, _owned(tenant_id, bucket_id))
    return session.scalars(
        query.order_by(ErrorBucketDevice.event_count.desc(), ErrorBucketDevice.device_id).limit(limit)
    ).all()


def bucket_events(session: Session, tenant_id: str, bucket_id: str, *, limit: int) -> Sequence[ErrorEvent]:
    """The tenant's bucket's most recent raw events."""
    query = select(ErrorEvent).where(ErrorEvent.bucket_id == bucket_id, ErrorEvent.tenant_id == tenant_id)
    return session.scalars(query.order_by(ErrorEvent.last_at.desc(), ErrorEvent.id.desc()).limit(limit)).all()


def events_between(
    session: Session,
    tenant_id: str,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
    bucket_id: str | None = None,
) -> Iterator[ErrorEvent]:
    """The tenant's raw events (of one bucket if given) by ``last_at``, oldest first, in chunks (at most ``limit``)."""
    query = select(ErrorEvent).where(ErrorEvent.tenant_id == tenant_id)
    if bucket_id is not None:
        query = query.where(ErrorEvent.bucket_id == bucket_id)
    if since is not None:
        query = query.where(ErrorEvent.last_at >= since)
    if until is not None:
        query = query.where(ErrorEvent.last_at < until)
    query = query.order_by(ErrorEvent.last_at, ErrorEvent.id).limit(limit).execution_options(yield_per=1000)
    yield from session.scalars(query)
