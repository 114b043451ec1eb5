"""A per-tenant cap on buckets: past it, new fingerprints share one overflow bucket (issue 8 follow-up).

A device that sends ever new fingerprints (a hostile device, or an app that puts
an address in its exception text) would otherwise grow ``error_buckets`` without
bound, one row per record. Buckets that exist keep counting; a fingerprint that
would open bucket number ``max_buckets_per_tenant + 1`` is counted in the
tenant's overflow bucket instead, and the first time that happens it is recorded
in the tenant's audit log (``error_report.bucket_cap_reached``), so an operator
sees that grouping stopped and why.

The cap is checked per batch under no lock: concurrent batches, and the batches
of one group commit, may open a few buckets more than the cap (at most one
group's worth each), never unboundedly many.

Example (in the ingest transaction, before the buckets are created)::

    per_bucket, titles = cap_new_buckets(session, tenant_id, per_bucket, titles, events,
                                         max_buckets=settings.max_buckets_per_tenant,
                                         actor=f"device:{device.device_id}", now=now)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.audit.service import record
from bastion.service.errorreports.fingerprint import ALGORITHM, bucket_id
from bastion.service.models import ErrorBucket

__all__ = ["CAP_ACTION", "OVERFLOW_FINGERPRINT", "cap_new_buckets", "overflow_bucket_id"]

#: The fingerprint of every tenant's overflow bucket (not one :func:`fingerprint` can make: its key is not a list).
OVERFLOW_FINGERPRINT = hashlib.sha256(json.dumps([ALGORITHM, "overflow"], separators=(",", ":")).encode()).hexdigest()
#: The audit action recorded when a tenant's first fingerprint goes to its overflow bucket.
CAP_ACTION = "error_report.bucket_cap_reached"

_R = TypeVar("_R")


def overflow_bucket_id(tenant_id: str) -> str:
    """The tenant's overflow bucket ID (per tenant, like every bucket)."""
    return bucket_id(tenant_id, OVERFLOW_FINGERPRINT)


def cap_new_buckets(
    session: Session,
    tenant_id: str,
    per_bucket: Mapping[str, list[_R]],
    titles: Mapping[str, tuple[str, str]],
    events: Sequence[MutableMapping[str, Any]],
    *,
    max_buckets: int,
    actor: str,
    now: dt.datetime,
    existing: set[str] | None = None,
) -> tuple[dict[str, list[_R]], dict[str, tuple[str, str]]]:
    """This batch's records per bucket, with the buckets past the tenant's cap merged into its overflow bucket.

    ``events`` (the rows to insert, each with a ``bucket_id``) are moved to the overflow
    bucket in place. Buckets that already exist are never moved; new ones are kept in ID
    order while there is room. ``actor`` (the reporting device) is named in the record.
    ``existing``, when given, holds (at least) those of the batch's bucket IDs that exist
    (a group commit reads them once for all its batches); else they are read here. The
    overflow bucket is added to it when this batch opens it, so that a group records
    the cap once, as its batches stored one by one would.

    Returns:
        The (possibly merged) ``per_bucket`` and ``titles``.
    """
    overflow = overflow_bucket_id(tenant_id)
    ids = set(per_bucket) - {overflow}
    if not ids:
        return dict(per_bucket), dict(titles)
    if existing is None:
        existing = set(session.scalars(select(ErrorBucket.id).where(ErrorBucket.id.in_(sorted(ids)))))
    new = sorted(ids - existing)
    if not new:
        return dict(per_bucket), dict(titles)
    held = session.scalar(
        select(func.count())
        .select_from(ErrorBucket)
        .where(ErrorBucket.tenant_id == tenant_id, ErrorBucket.id != overflow)
    )
    room = max(0, max_buckets - int(held or 0))
    spill = set(new[room:])
    if not spill:
        return dict(per_bucket), dict(titles)
    kept = {bid: list(records) for bid, records in per_bucket.items() if bid not in spill}
    moved = kept.setdefault(overflow, [])
    for bid in sorted(spill):
        moved.extend(per_bucket[bid])
    kept_titles = {bid: title for bid, title in titles.items() if bid not in spill}
    kept_titles[overflow] = (OVERFLOW_FINGERPRINT, f"overflow: new failures past the cap of {max_buckets} buckets")
    for event in events:
        if event["bucket_id"] in spill:
            event["bucket_id"] = overflow
    if overflow not in (existing or ()) and session.get(ErrorBucket, overflow) is None:
        record(
            session,
            now=now,
            tenant_id=tenant_id,
            actor=actor,
            action=CAP_ACTION,
            target=f"bucket:{overflow}",
            detail=f"{max_buckets} buckets reached; new fingerprints are counted in bucket {overflow}",
        )
    if existing is not None:
        existing.add(overflow)  # opened by this batch: the group's later batches do not record the cap again
    return kept, kept_titles
