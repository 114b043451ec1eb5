"""Model → response body conversions shared by the endpoints."""

from __future__ import annotations

from bastion.service.errorreports.schemas import BucketOut
from bastion.service.models import ErrorBucket

__all__ = ["bucket_out"]


def bucket_out(bucket: ErrorBucket) -> BucketOut:
    """The API view of a bucket (``id`` is ``bucket_id`` on the wire)."""
    return BucketOut(
        bucket_id=bucket.id,
        algorithm=bucket.algorithm,
        category=bucket.category,
        event_type=bucket.event_type,
        component_id=bucket.component_id,
        title=bucket.title,
        state=bucket.state,
        first_seen=bucket.first_seen,
        last_seen=bucket.last_seen,
        event_count=bucket.event_count,
        device_count=bucket.device_count,
        first_version=bucket.first_version,
        last_version=bucket.last_version,
        resolved_at=bucket.resolved_at,
        resolved_by=bucket.resolved_by,
        resolved_version=bucket.resolved_version,
        regressed_at=bucket.regressed_at,
    )
