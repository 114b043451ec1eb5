"""HTTP endpoints: ``POST /device/error-reports`` (device-signed) and the operator's bucket API."""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from bastion.service import metrics
from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports import ingest, log_requests, service
from bastion.service.errorreports.ingest_queue import BUSY_RETRY_AFTER_S, INGEST_THREADS, IngestBusyError, IngestQueue
from bastion.service.errorreports.limits import ErrorReportSettingsDep
from bastion.service.errorreports.models_out import bucket_out
from bastion.service.errorreports.schemas import (
    BatchAccepted,
    BucketDetailOut,
    BucketDeviceOut,
    BucketEventOut,
    BucketOut,
    BucketPageOut,
    BucketVersionOut,
    LogRequestOut,
)
from bastion.service.errors import InvalidRequest, ServiceError
from bastion.service.web import NowDep, SessionDep, error_response

__all__ = ["REPORT_CONTENT_TYPE", "pending_log_requests", "router"]

#: A time in a query: an ISO 8601 date or date-time only (a bare number is not taken as epoch seconds).
TimeQuery = Annotated[
    str | None,
    Query(max_length=40, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]{2,15})?(Z|[+-][0-9]{2}:?[0-9]{2})?$"),
]

router = APIRouter(tags=["error-reports"])

#: The media type of a batch (RFC 9052 COSE).
REPORT_CONTENT_TYPE = "application/cose"


def pending_log_requests(session: Session, device_id: str, now: dt.datetime) -> list[ingest.LogRequest]:
    """The device's pending log requests, handed out in every batch answer (docs/error-reports.md "Device logs")."""
    return [
        ingest.LogRequest(
            request_id=str(r["request_id"]), component_id=str(r["component_id"]), max_bytes=int(r["max_bytes"])
        )
        for r in log_requests.pending_for(session, device_id, now=now)
    ]


def _refusals(request: Request) -> RefusalLog:
    refusals = getattr(request.app.state, "error_report_refusals", None)
    if refusals is None:
        refusals = request.app.state.error_report_refusals = RefusalLog()
    return refusals


def _ingest_queue(request: Request) -> IngestQueue:
    """This event loop's queue of batches (an app may serve on more than one loop, as tests do)."""
    queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IngestQueue] | None = getattr(
        request.app.state, "error_report_queues", None
    )
    if queues is None:
        queues = request.app.state.error_report_queues = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    queue = queues.get(loop)
    if queue is None:
        factory: sessionmaker[Session] = request.app.state.sessionmaker
        bind = factory.kw.get("bind")
        dialect = bind.dialect.name if bind is not None else "sqlite"
        queue = queues[loop] = IngestQueue(
            factory,
            _refusals(request),
            threads=INGEST_THREADS.get(dialect, 4),
            pending_log_requests=pending_log_requests,
        )
    return queue


@router.post("/device/error-reports", response_model=BatchAccepted)
async def report_errors(
    request: Request, now: NowDep, settings: ErrorReportSettingsDep
) -> BatchAccepted | JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != REPORT_CONTENT_TYPE:
        return error_response(415, "unsupported_media_type", f"send the batch as {REPORT_CONTENT_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_batch_bytes:
            break
    # An oversized body is refused (413) and recorded by the first check. The batch is checked and
    # stored with the others that wait in this worker (ADR 0028); the session lives in that thread.
    try:
        accepted = await _ingest_queue(request).submit(bytes(body), now=now, settings=settings)
    except IngestBusyError:
        metrics.ERROR_REPORTS_INGESTED.labels(status="busy").inc()
        return error_response(
            503,
            "ingest_busy",
            "the service has too many error-report batches waiting; keep the batch and send it again later",
            {"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )
    except ServiceError:
        metrics.ERROR_REPORTS_INGESTED.labels(status="refused").inc()
        raise
    metrics.ERROR_REPORTS_INGESTED.labels(status=accepted.status).inc()
    if accepted.status == "accepted":
        metrics.ERROR_REPORT_RECORDS.inc(accepted.records)
    return BatchAccepted(
        batch_id=accepted.batch_id,
        status=accepted.status,
        records=accepted.records,
        log_requests=[
            LogRequestOut(request_id=r.request_id, component_id=r.component_id, max_bytes=r.max_bytes)
            for r in accepted.log_requests
        ],
    )


@router.get("/error-reports/buckets")
def list_buckets(
    *,
    who: ReaderDep,
    session: SessionDep,
    settings: ErrorReportSettingsDep,
    state: Annotated[Literal["open", "resolved", "regressed"] | None, Query()] = None,
    component: Annotated[str | None, Query(max_length=64)] = None,
    version: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[str | None, Query(max_length=16)] = None,
    since: TimeQuery = None,
    severity: Annotated[
        Literal["warning", "info"], Query(description="least severity listed: warning (Error+Warning) or info (all)")
    ] = "warning",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> BucketPageOut:
    page = service.list_buckets(
        session,
        who.tenant_id,
        state=state,
        component=component,
        version=version,
        category=category,
        since=_aware(since),
        limit=limit,
        cursor=cursor,
        severity=severity,
        settings=settings,
    )
    return BucketPageOut(items=[bucket_out(b) for b in page.items], next_cursor=page.next_cursor)


@router.get("/error-reports/buckets/{bucket_id}")
def show_bucket(
    bucket_id: str, who: ReaderDep, session: SessionDep, now: NowDep, settings: ErrorReportSettingsDep
) -> BucketDetailOut:
    detail = service.show_bucket(session, who, bucket_id, now=now, settings=settings)
    return BucketDetailOut(
        bucket=bucket_out(detail.bucket),
        versions=[BucketVersionOut.model_validate(v) for v in detail.versions],
        devices=[BucketDeviceOut.model_validate(d) for d in detail.devices],
        recent_events=[BucketEventOut.model_validate(e) for e in detail.events],
    )


@router.post("/error-reports/buckets/{bucket_id}/resolve")
def resolve_bucket(bucket_id: str, who: ContributorDep, session: SessionDep, now: NowDep) -> BucketOut:
    return bucket_out(service.resolve_bucket(session, who, bucket_id, now=now))


def _aware(text: str | None) -> dt.datetime | None:
    """The query's time as UTC (naive: taken as UTC); one that has no UTC form (year 1 at +01:00) is refused."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest("the time is not an ISO 8601 date-time", code="invalid_window") from exc
    try:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except OverflowError as exc:
        raise InvalidRequest("the time is out of range", code="invalid_window") from exc


@router.get(
    "/error-reports/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}, "description": "the raw events"}},
)
def download(
    *,
    request: Request,
    who: ReaderDep,
    now: NowDep,
    settings: ErrorReportSettingsDep,
    format: Annotated[Literal["csv", "json"], Query()] = "csv",  # noqa: A002 - the API's parameter name
    since: TimeQuery = None,
    until: TimeQuery = None,
    bucket: Annotated[str | None, Query(max_length=20, pattern=r"^b[0-9a-f]{16}$")] = None,
) -> StreamingResponse:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    start, end = _aware(since), _aware(until)
    with factory() as session:  # validate before the first byte goes out
        if bucket is not None:  # another tenant's bucket: 404 and a record, like show and resolve
            service.bucket_for(session, who, bucket, action="error_report.download", now=now)
        service.download(
            session, who.tenant_id, fmt=format, since=start, until=end, bucket_id=bucket, settings=settings
        )

    def chunks() -> Iterator[str]:
        with factory() as session:  # the request's session is gone once streaming starts
            yield from service.download(
                session, who.tenant_id, fmt=format, since=start, until=end, bucket_id=bucket, settings=settings
            )

    media = "text/csv" if format == "csv" else "application/json"
    filename = f"error-reports-{bucket}.{format}" if bucket else f"error-reports.{format}"
    return StreamingResponse(
        chunks(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
