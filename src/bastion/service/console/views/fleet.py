"""The fleet overview: device counts by OS version, group, attestation standing and last seen,
and attestations and failures over time.

Example:
    >>> overview = fleet_overview(session, tenant_id, now=now)  # doctest: +SKIP
    >>> overview.total, [c.label for c in overview.by_standing]  # doctest: +SKIP
    (100000, ['ok', 'failed', 'expired', 'revoked', 'never'])

Every count comes from one ``GROUP BY`` over the tenant's devices (OS version,
group, standing and last-seen bucket at once), so the page scans the devices
once whatever the fleet's size; the chart is one ``GROUP BY`` over the window's
attestations.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from bastion.service.console.views._sql import Step, bucket_expr, bucket_keys
from bastion.service.models import Attestation, Device, DeviceGroup, Product

__all__ = [
    "CHART_WINDOWS",
    "MAX_GROUP_ROWS",
    "SEEN_BUCKETS",
    "STANDINGS",
    "ActivityPoint",
    "Count",
    "FleetOverview",
    "attestation_activity",
    "fleet_overview",
]

#: Attestation standings, in display order: last attestation passed (with a live certificate),
#: failed, passed but its certificate has expired since, revoked by an operator, never attested.
STANDINGS = ("ok", "failed", "expired", "revoked", "never")
#: Last-seen buckets (by the last attestation), in display order, with their upper bound of age.
SEEN_BUCKETS: tuple[tuple[str, dt.timedelta | None], ...] = (
    ("<1h", dt.timedelta(hours=1)),
    ("<24h", dt.timedelta(hours=24)),
    ("<7d", dt.timedelta(days=7)),
    ("older", None),
)
NEVER = "never"
#: The chart's windows: name -> (bucket width, number of buckets).
CHART_WINDOWS: dict[str, tuple[Step, int]] = {"24h": (Step.HOUR, 24), "7d": (Step.DAY, 7), "30d": (Step.DAY, 30)}
#: Bound on the distinct OS versions and groups listed (the rest are summed into "other").
MAX_GROUP_ROWS = 50
#: How an unset OS version or group is shown.
NO_VALUE = "(none)"


@dataclass(frozen=True)
class Count:
    """One row of a breakdown: its label, how many devices, and the filter value (None: not filterable)."""

    label: str
    value: int
    key: str | None = None


@dataclass(frozen=True)
class ActivityPoint:
    """Attestations in one time bucket: passed and failed."""

    start: dt.datetime
    ok: int
    failed: int


@dataclass(frozen=True)
class FleetOverview:
    """Everything the fleet page shows."""

    total: int
    by_os_version: Sequence[Count]
    by_group: Sequence[Count]
    by_standing: Sequence[Count]
    by_last_seen: Sequence[Count]
    activity: Sequence[ActivityPoint]
    window: str


def _top(counter: Counter[str | None], names: dict[str, str] | None = None) -> list[Count]:
    """Rows biggest first (ties by label), at most :data:`MAX_GROUP_ROWS`, the rest summed as "other"."""
    rows = sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))
    out = [
        Count(label=NO_VALUE if key is None else (names or {}).get(key, key), value=n, key=key)
        for key, n in rows[:MAX_GROUP_ROWS]
    ]
    rest = sum(n for _, n in rows[MAX_GROUP_ROWS:])
    if rest:
        out.append(Count(label="other", value=rest))
    return out


def _group_names(session: Session, tenant_id: str, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(DeviceGroup.id, DeviceGroup.name, Product.name)
        .join(Product, Product.id == DeviceGroup.product_id)
        .where(DeviceGroup.tenant_id == tenant_id, DeviceGroup.id.in_(ids))
    ).all()
    return {gid: f"{product}/{name}" for gid, name, product in rows}


def fleet_overview(session: Session, tenant_id: str, *, now: dt.datetime, window: str = "24h") -> FleetOverview:
    """The tenant's fleet at ``now``: breakdowns from one scan, and the attestation chart of ``window``.

    Raises:
        KeyError: ``window`` is not one of :data:`CHART_WINDOWS` (the page validates it first).
    """
    standing = case(
        (Device.revoked_at.is_not(None), "revoked"),
        (Device.last_result.is_(None), NEVER),
        (Device.last_result != "ok", "failed"),
        (Device.cert_not_after.is_not(None) & (Device.cert_not_after < now), "expired"),
        else_="ok",
    ).label("standing")
    seen_whens = [(Device.last_attested_at >= now - bound, label) for label, bound in SEEN_BUCKETS if bound is not None]
    seen = case(
        (Device.last_attested_at.is_(None), NEVER),
        *seen_whens,
        else_="older",
    ).label("seen")
    rows = session.execute(
        select(Device.os_version, Device.group_id, standing, seen, func.count())
        .where(Device.tenant_id == tenant_id)
        .group_by(Device.os_version, Device.group_id, standing, seen)
    ).all()
    versions: Counter[str | None] = Counter()
    groups: Counter[str | None] = Counter()
    standings: Counter[str] = Counter()
    seens: Counter[str] = Counter()
    for os_version, group_id, stand, last, n in rows:
        versions[os_version] += n
        groups[group_id] += n
        standings[stand] += n
        seens[last] += n
    names = _group_names(session, tenant_id, [g for g in groups if g is not None][: MAX_GROUP_ROWS * 4])
    seen_order = [label for label, _ in SEEN_BUCKETS] + [NEVER]
    return FleetOverview(
        total=sum(standings.values()),
        by_os_version=_top(versions),
        by_group=_top(groups, names),
        by_standing=[Count(label=s, value=standings[s], key=s) for s in STANDINGS],
        by_last_seen=[Count(label=s, value=seens[s], key=s) for s in seen_order],
        activity=attestation_activity(session, tenant_id, now=now, window=window),
        window=window,
    )


def attestation_activity(session: Session, tenant_id: str, *, now: dt.datetime, window: str) -> list[ActivityPoint]:
    """Attestations passed and failed per bucket of ``window``, oldest first (empty buckets as zero)."""
    step, count = CHART_WINDOWS[window]
    keys = bucket_keys(now, step, count)
    since = keys[0][1]
    bucket = bucket_expr(session, Attestation.at, step).label("bucket")
    rows = session.execute(
        select(bucket, Attestation.result, func.count())
        .where(Attestation.tenant_id == tenant_id, Attestation.at >= since, Attestation.at <= now)
        .group_by(bucket, Attestation.result)
    ).all()
    ok: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for key, result, n in rows:
        (ok if result == "ok" else failed)[key] += n
    return [ActivityPoint(start=start, ok=ok[key], failed=failed[key]) for key, start in keys]
