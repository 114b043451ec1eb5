"""Error buckets: a page of buckets with a daily trend each (a sparkline), and one bucket's page.

The list and the bucket are the API's (:mod:`bastion.service.errorreports.service`);
the trend adds one ``GROUP BY bucket, day`` over the raw events of the page's
buckets, plus the daily roll-ups of events past their raw retention.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.console.views._sql import Step, bucket_expr, bucket_key, bucket_keys
from bastion.service.errorreports.service import BucketDetail, BucketPage
from bastion.service.models import ErrorBucket, ErrorDailyCount, ErrorEvent

__all__ = ["TREND_DAYS", "BucketRow", "BucketView", "BucketsView", "bucket_trends", "bucket_view", "buckets_view"]

#: Days in a bucket's trend.
TREND_DAYS = 14


@dataclass(frozen=True)
class BucketRow:
    """One bucket of the list with its daily event counts (oldest first)."""

    bucket: ErrorBucket
    trend: Sequence[int]


@dataclass(frozen=True)
class BucketsView:
    """A page of buckets and the cursor of the next page (None: the last)."""

    rows: Sequence[BucketRow]
    next_cursor: str | None
    days: Sequence[dt.datetime]


@dataclass(frozen=True)
class BucketView:
    """One bucket: its detail and its trend with the days."""

    detail: BucketDetail
    trend: Sequence[tuple[dt.datetime, int]]


def bucket_trends(
    session: Session, tenant_id: str, bucket_ids: Sequence[str], *, now: dt.datetime, days: int = TREND_DAYS
) -> tuple[list[dt.datetime], dict[str, list[int]]]:
    """Events per day of each bucket over the ``days`` ending today (raw events and roll-ups)."""
    keys = bucket_keys(now, Step.DAY, days)
    since = keys[0][1]
    counts: Counter[tuple[str | None, str]] = Counter()
    if bucket_ids:
        day = bucket_expr(session, ErrorEvent.last_at, Step.DAY).label("day")
        for bid, key, n in session.execute(
            select(ErrorEvent.bucket_id, day, func.sum(ErrorEvent.count))
            .where(ErrorEvent.tenant_id == tenant_id, ErrorEvent.bucket_id.in_(bucket_ids), ErrorEvent.last_at >= since)
            .group_by(ErrorEvent.bucket_id, day)
        ):
            counts[(bid, bucket_key(key, Step.DAY))] += int(n or 0)
        for bid, when, n in session.execute(
            select(ErrorDailyCount.bucket_id, ErrorDailyCount.day, func.sum(ErrorDailyCount.events))
            .where(
                ErrorDailyCount.tenant_id == tenant_id,
                ErrorDailyCount.bucket_id.in_(bucket_ids),
                ErrorDailyCount.day >= since.date(),
            )
            .group_by(ErrorDailyCount.bucket_id, ErrorDailyCount.day)
        ):
            counts[(bid, when.isoformat())] += int(n or 0)
    trends = {bid: [counts[(bid, key)] for key, _ in keys] for bid in bucket_ids}
    return [start for _, start in keys], trends


def buckets_view(session: Session, tenant_id: str, page: BucketPage, *, now: dt.datetime) -> BucketsView:
    """The page of buckets (``errorreports.service.list_buckets``) with their trends."""
    days, trends = bucket_trends(session, tenant_id, [b.id for b in page.items], now=now)
    return BucketsView(
        rows=[BucketRow(bucket=b, trend=trends[b.id]) for b in page.items], next_cursor=page.next_cursor, days=days
    )


def bucket_view(session: Session, detail: BucketDetail, *, now: dt.datetime) -> BucketView:
    """One bucket (``errorreports.service.show_bucket``) with its trend."""
    days, trends = bucket_trends(session, detail.bucket.tenant_id, [detail.bucket.id], now=now)
    return BucketView(detail=detail, trend=list(zip(days, trends[detail.bucket.id], strict=True)))
