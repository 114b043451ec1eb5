"""Operator actions on buckets: list (cursor paging), show, resolve, download (CSV / JSON)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from bastion.images.semver import lenient_semver_key
from bastion.service.audit.service import record, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.errorreports import repository
from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS, ErrorReportSettings
from bastion.service.errors import InvalidRequest, NotFound
from bastion.service.models import ErrorBucket, ErrorBucketDevice, ErrorBucketVersion, ErrorEvent

__all__ = [
    "CSV_COLUMNS",
    "SEVERITIES",
    "STATES",
    "BucketDetail",
    "BucketPage",
    "bucket_for",
    "download",
    "list_buckets",
    "resolve_bucket",
    "show_bucket",
]

STATES = ("open", "resolved", "regressed")
#: The least severity a bucket list shows: ``warning`` (Error and Warning, the default) or ``info`` (all).
SEVERITIES = ("warning", "info")
#: Azure Sphere's columns, then Bastion's.
CSV_COLUMNS = (
    "DeviceId",
    "EventCategory",
    "EventClass",
    "EventType",
    "EventCount",
    "Description",
    "StartTime",
    "EndTime",
    "Bucket",
    "Component",
    "Version",
    "OsVersion",
)


@dataclass(frozen=True)
class BucketPage:
    """One page of buckets and the cursor of the next (None: last page)."""

    items: Sequence[ErrorBucket]
    next_cursor: str | None


@dataclass(frozen=True)
class BucketDetail:
    """A bucket with its versions, a sample of devices and its recent events."""

    bucket: ErrorBucket
    versions: Sequence[ErrorBucketVersion]
    devices: Sequence[ErrorBucketDevice]
    events: Sequence[ErrorEvent]


def _encode_cursor(bucket: ErrorBucket) -> str:
    raw = json.dumps([bucket.last_seen.isoformat(), bucket.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seen, bid = json.loads(raw)
        when = dt.datetime.fromisoformat(seen)
        if not isinstance(bid, str) or len(bid) > 20 or when.tzinfo is None:
            raise ValueError("bad cursor")
        when = when.astimezone(dt.UTC)  # a time with no UTC form (year 1 at +01:00) is not ours
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise InvalidRequest("the cursor is not one this API returned", code="invalid_cursor") from exc
    return when, bid


def list_buckets(
    session: Session,
    tenant_id: str,
    *,
    state: str | None = None,
    component: str | None = None,
    version: str | None = None,
    category: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
    severity: str = "warning",
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
) -> BucketPage:
    """A page of the tenant's buckets, most recently seen first.

    By default only buckets with an Error or Warning record are listed (``severity="info"``
    lists the Info-only ones too, e.g. "update applied").

    Raises:
        InvalidRequest: an unknown state or severity, a limit out of ``[1, max_page_rows]``, or a foreign cursor.
    """
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)}", code="invalid_state")
    if severity not in SEVERITIES:
        raise InvalidRequest(f"severity must be one of {', '.join(SEVERITIES)}", code="invalid_severity")
    if not 1 <= limit <= settings.max_page_rows:
        raise InvalidRequest(f"limit must be in [1, {settings.max_page_rows}]", code="invalid_limit")
    after = _decode_cursor(cursor) if cursor else None
    rows = repository.list_buckets(
        session,
        tenant_id,
        state=state,
        component=component,
        version=version,
        category=category,
        since=since,
        after=after,
        limit=limit + 1,
        include_info=severity == "info",
    )
    items = list(rows[:limit])
    return BucketPage(items=items, next_cursor=_encode_cursor(items[-1]) if len(rows) > limit else None)


def bucket_for(session: Session, who: Principal, bucket_id: str, *, action: str, now: dt.datetime) -> ErrorBucket:
    """The caller's tenant's bucket; a missing one (or another tenant's) is recorded and refused.

    Raises:
        NotFound: ``bucket_not_found``, the same answer for another tenant's bucket as for none.
    """
    bucket = repository.get_bucket(session, who.tenant_id, bucket_id)
    if bucket is None:
        record_not_found(
            session, now=now, tenant_id=who.tenant_id, actor=who.actor, action=action, target=f"bucket:{bucket_id[:20]}"
        )
        raise NotFound(f"no bucket {bucket_id[:20]!r} in your tenant", code="bucket_not_found")
    return bucket


def show_bucket(
    session: Session,
    who: Principal,
    bucket_id: str,
    *,
    now: dt.datetime,
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
) -> BucketDetail:
    """The bucket with its versions, a device sample and recent events.

    Raises:
        NotFound: ``bucket_not_found`` (also for another tenant's bucket).
    """
    bucket = bucket_for(session, who, bucket_id, action="error_report.read", now=now)
    return BucketDetail(
        bucket=bucket,
        versions=repository.bucket_versions(session, who.tenant_id, bucket.id),
        devices=repository.bucket_devices(session, who.tenant_id, bucket.id, limit=settings.show_sample_rows),
        events=repository.bucket_events(session, who.tenant_id, bucket.id, limit=settings.show_sample_rows),
    )


def resolve_bucket(session: Session, who: Principal, bucket_id: str, *, now: dt.datetime) -> ErrorBucket:
    """Mark a bucket resolved as of the highest version seen so far; audited, commits.

    A later record from a newer version reopens it as ``regressed``.

    Raises:
        NotFound: ``bucket_not_found``.
    """
    bucket = bucket_for(session, who, bucket_id, action="error_report.resolve", now=now)
    versions = [v.version for v in repository.bucket_versions(session, who.tenant_id, bucket.id)] or [
        bucket.last_version
    ]
    highest = max(versions, key=lenient_semver_key)
    before = bucket.state
    bucket.state, bucket.resolved_at, bucket.resolved_by, bucket.resolved_version = "resolved", now, who.actor, highest
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="error_report.resolve",
        target=f"bucket:{bucket.id}",
        detail=f"{before} -> resolved in {highest}"[:200],
    )
    session.commit()
    return bucket


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    """A device-chosen text made inert for a spreadsheet: a formula start is prefixed with ``'``."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _csv_row(event: ErrorEvent) -> list[str]:
    return [_cell(value) for value in _row(event)]


def _row(event: ErrorEvent) -> list[str]:
    return [
        event.device_id,
        event.category,
        event.event_class,
        event.event_type,
        str(event.count),
        event.description,
        _iso(event.first_at),
        _iso(event.last_at),
        event.bucket_id or "",
        event.component_id,
        event.version,
        event.os_version,
    ]


def download(
    session: Session,
    tenant_id: str,
    *,
    fmt: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    bucket_id: str | None = None,
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
) -> Iterator[str]:
    """The tenant's raw events (of one of its buckets if given) as CSV (:data:`CSV_COLUMNS`) or JSON, in chunks.

    The query carries the tenant, so another tenant's bucket ID downloads nothing; the
    endpoint refuses it first with :func:`bucket_for` (404 and a record).

    Raises:
        InvalidRequest: an unknown format, or ``until`` not after ``since``.
    """
    if fmt not in ("csv", "json"):
        raise InvalidRequest("format must be csv or json", code="invalid_format")
    if since is not None and until is not None and until <= since:
        raise InvalidRequest("until must be after since", code="invalid_window")
    events = repository.events_between(
        session, tenant_id, since=since, until=until, limit=settings.max_download_rows, bucket_id=bucket_id
    )
    return _csv(events) if fmt == "csv" else _json(events)


def _csv(events: Iterator[ErrorEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for index, event in enumerate(events, 1):
        writer.writerow(_csv_row(event))
        if index % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _json(events: Iterator[ErrorEvent]) -> Iterator[str]:
    yield "["
    for index, event in enumerate(events):
        item = dict(zip(CSV_COLUMNS, _row(event), strict=True))
        item["EventCount"] = event.count  # type: ignore[assignment]
        yield ("," if index else "") + json.dumps(item, separators=(",", ":"))
    yield "]"
