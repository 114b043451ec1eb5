"""Error buckets: the list with a trend per bucket, one bucket's page, and the CSV download.

The CSV is the API's (:func:`bastion.service.errorreports.service.download`, the
same columns and spreadsheet-formula escaping as ``GET /api/v1/error-reports/download``),
served here with the console session's authority.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from bastion.service.console.deps import ConsoleReaderDep, page_router
from bastion.service.console.paging import filter_value
from bastion.service.console.render import NavItem, render
from bastion.service.console.views.buckets import bucket_view, buckets_view
from bastion.service.errorreports import service
from bastion.service.errorreports.limits import ErrorReportSettingsDep
from bastion.service.errors import InvalidRequest
from bastion.service.web import NowDep, SessionDep

__all__ = ["NAV", "PAGE_ROWS", "router"]

router = page_router()
NAV = NavItem("Error buckets", "/console/buckets")
#: Buckets per page.
PAGE_ROWS = 50

BucketId = Annotated[str, Path(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9]+$")]


def _time(request: Request, name: str) -> dt.datetime | None:
    raw = filter_value(request, name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name} is an ISO 8601 time, e.g. 2026-01-15T00:00:00Z", code="invalid_window") from None
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone (Z or +00:00)", code="invalid_window")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidRequest(f"{name} is out of range", code="invalid_window") from None


@router.get("/buckets", include_in_schema=False)
def buckets(
    request: Request, me: ConsoleReaderDep, session: SessionDep, now: NowDep, settings: ErrorReportSettingsDep
) -> HTMLResponse:
    """A page of buckets, most recently seen first (``?state=``, ``?cursor=`` for the next page)."""
    state = filter_value(request, "state")
    cursor = filter_value(request, "cursor")
    page = service.list_buckets(session, me.tenant_id, state=state, limit=PAGE_ROWS, cursor=cursor, settings=settings)
    view = buckets_view(session, me.tenant_id, page, now=now)
    return render(request, "pages/buckets.html", {"view": view, "state": state, "states": service.STATES})


@router.get("/buckets/download.csv", include_in_schema=False)
def download(
    request: Request, me: ConsoleReaderDep, session: SessionDep, settings: ErrorReportSettingsDep
) -> StreamingResponse:
    """The tenant's raw error events as CSV (``?since=``/``?until=`` ISO 8601), as the API's download."""
    since, until = _time(request, "since"), _time(request, "until")
    service.download(session, me.tenant_id, fmt="csv", since=since, until=until, settings=settings)  # validates
    factory = request.app.state.sessionmaker
    tenant_id = me.tenant_id

    def chunks() -> Iterator[str]:
        with factory() as streaming:  # the request's session is gone once streaming starts
            yield from service.download(streaming, tenant_id, fmt="csv", since=since, until=until, settings=settings)

    return StreamingResponse(
        chunks(), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="error-reports.csv"'}
    )


@router.get("/buckets/{bucket_id}", include_in_schema=False)
def bucket(
    request: Request,
    bucket_id: BucketId,
    me: ConsoleReaderDep,
    *,
    session: SessionDep,
    now: NowDep,
    settings: ErrorReportSettingsDep,
) -> HTMLResponse:
    """One bucket: its versions, devices, recent events and trend."""
    detail = service.show_bucket(session, me.principal, bucket_id, now=now, settings=settings)
    return render(request, "pages/bucket.html", {"view": bucket_view(session, detail, now=now)})
