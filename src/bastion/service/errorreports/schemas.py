"""Request and response bodies of the error-report endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BatchAccepted",
    "BucketDetailOut",
    "BucketDeviceOut",
    "BucketEventOut",
    "BucketOut",
    "BucketPageOut",
    "BucketVersionOut",
    "LogRequestOut",
]


class LogRequestOut(BaseModel):
    request_id: str
    component_id: str
    max_bytes: int


class BatchAccepted(BaseModel):
    """The answer to a batch: ``accepted``, or ``duplicate`` for a replay (counted once)."""

    batch_id: str
    status: str
    records: int
    log_requests: list[LogRequestOut]


class BucketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    bucket_id: str
    algorithm: int
    category: str
    event_type: str
    component_id: str
    title: str
    state: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    event_count: int
    device_count: int
    first_version: str
    last_version: str
    resolved_at: dt.datetime | None
    resolved_by: str | None
    resolved_version: str | None
    regressed_at: dt.datetime | None


class BucketPageOut(BaseModel):
    items: list[BucketOut]
    next_cursor: str | None


class BucketVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: str
    event_count: int
    device_count: int
    first_seen: dt.datetime
    last_seen: dt.datetime


class BucketDeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    event_count: int
    first_seen: dt.datetime
    last_seen: dt.datetime


class BucketEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    event_class: str
    event_type: str
    component_id: str
    version: str
    os_version: str
    count: int
    first_at: dt.datetime
    last_at: dt.datetime
    description: str
    detail: dict[str, object]


class BucketDetailOut(BaseModel):
    bucket: BucketOut
    versions: list[BucketVersionOut]
    devices: list[BucketDeviceOut]
    recent_events: list[BucketEventOut]
