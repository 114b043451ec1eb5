"""Error-report queries for the operator surface (list, show, download)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bastion.service.models import ErrorBucket, ErrorBucketDevice, ErrorBucketVersion, ErrorEvent

__all__ = ["bucket_devices", "bucket_events", "bucket_versions", "events_between", "get_bucket", "list_buckets"]


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
) -> Sequence[ErrorBucket]:
    """Buckets newest ``last_seen`` first (ties by ID), after the cursor position ``after``."""
    query = select(ErrorBucket).where(ErrorBucket.tenant_id == tenant_id)
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


def bucket_versions(session: Session, bucket_id: str) -> Sequence[ErrorBucketVersion]:
    """The bucket's per-version counters, newest ``last_seen`` first."""
    query = select(ErrorBucketVersion).where(ErrorBucketVersion.bucket_id == bucket_id)
    return session.scalars(query.order_by(ErrorBucketVersion.last_seen.desc())).all()


def bucket_devices(session: Session, bucket_id: str, *, limit: int) -> Sequence[ErrorBucketDevice]:
    """A sample of the bucket's devices, most events first."""
    query = select(ErrorBucketDevice).where(ErrorBucketDevice.bucket_id == bucket_id)
    return session.scalars(
        query.order_by(ErrorBucketDevice.event_count.desc(), ErrorBucketDevice.device_id).limit(limit)
    ).all()


def bucket_events(session: Session, bucket_id: str, *, limit: int) -> Sequence[ErrorEvent]:
    """The bucket's most recent raw events."""
    query = select(ErrorEvent).where(ErrorEvent.bucket_id == bucket_id)
    return session.scalars(query.order_by(ErrorEvent.last_at.desc(), ErrorEvent.id.desc()).limit(limit)).all()


def events_between(
    session: Session, tenant_id: str, *, since: dt.datetime | None, until: dt.datetime | None, limit: int
) -> Iterator[ErrorEvent]:
    """The tenant's raw events by ``last_at``, oldest first, streamed in chunks (at most ``limit``)."""
    query = select(ErrorEvent).where(ErrorEvent.tenant_id == tenant_id)
    if since is not None:
        query = query.where(ErrorEvent.last_at >= since)
    if until is not None:
        query = query.where(ErrorEvent.last_at < until)
    query = query.order_by(ErrorEvent.last_at, ErrorEvent.id).limit(limit).execution_options(yield_per=1000)
    yield from session.scalars(query)
