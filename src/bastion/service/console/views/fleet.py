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
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.console.views._sql import Step, bucket_expr, bucket_key, bucket_keys
from bastion.service.models import Attestation, Device, DeviceGroup, OsImage, Product

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


def _group_names(session: Session, tenant_id: str, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(DeviceGroup.id, DeviceGroup.name, Product.name)
        .join(Product, Product.id == DeviceGroup.product_id)
        .where(DeviceGroup.tenant_id == tenant_id, DeviceGroup.id.in_(ids))
    ).all()
    return {gid: f"{product}/{name}" for gid, name, product in rows}


def _known_groups(session: Session, tenant_id: str) -> dict[str, str]:
    """The tenant's groups by id, named ``product/group`` (at most ``MAX_GROUP_ROWS + 1`` rows)."""
    rows = session.execute(
        select(DeviceGroup.id, DeviceGroup.name, Product.name)
        .join(Product, Product.id == DeviceGroup.product_id)
        .where(DeviceGroup.tenant_id == tenant_id)
        .order_by(DeviceGroup.id)
        .limit(MAX_GROUP_ROWS + 1)
    ).all()
    return {gid: f"{product}/{name}" for gid, name, product in rows}


def _known_versions(session: Session, tenant_id: str) -> list[str]:
    """The OS versions the tenant published (a device's version is the known-good image it attested)."""
    return list(
        session.scalars(
            select(OsImage.version).where(OsImage.tenant_id == tenant_id).distinct().limit(MAX_GROUP_ROWS + 1)
        )
    )


def _breakdown(labels: dict[str, str], counts: dict[str, int], total: int, unset: int) -> list[Count]:
    """Rows biggest first; devices with a value outside ``labels`` are "other", devices with none "(none)"."""
    rows = [Count(label=labels[key], value=n, key=key) for key, n in counts.items() if n]
    rows.sort(key=lambda c: (-c.value, c.label))
    other = total - unset - sum(counts.values())
    if unset:
        rows.append(Count(label=NO_VALUE, value=unset, key=None))
    if other:
        rows.append(Count(label="other", value=other))
    return rows


def fleet_overview(session: Session, tenant_id: str, *, now: dt.datetime, window: str = "24h") -> FleetOverview:
    """The tenant's fleet at ``now``: every breakdown from one pass, and the attestation chart of ``window``.

    One ``SELECT`` of filtered counts (``count(*) FILTER (WHERE ...)``) over the tenant's
    devices: a column per standing, last-seen bucket, group and published OS version,
    so neither database sorts the fleet (a ``GROUP BY`` over 100,000 text keys sorts;
    see ``benchmarks/console.py``). A tenant with more than :data:`MAX_GROUP_ROWS` groups
    or versions gets those two breakdowns from a ``GROUP BY`` instead.

    Raises:
        KeyError: ``window`` is not one of :data:`CHART_WINDOWS` (the page validates it first).
    """
    activity = attestation_activity(session, tenant_id, now=now, window=window)
    groups = _known_groups(session, tenant_id)
    versions = _known_versions(session, tenant_id)
    by_filter = len(groups) <= MAX_GROUP_ROWS and len(versions) <= MAX_GROUP_ROWS
    live = Device.revoked_at.is_(None)
    attested = live & Device.last_result.is_not(None)
    ok = attested & (Device.last_result == "ok")
    expired = ok & Device.cert_not_after.is_not(None) & (Device.cert_not_after < now)
    columns: list[Any] = [
        func.count(),
        func.count().filter(Device.revoked_at.is_not(None)),
        func.count().filter(live & Device.last_result.is_(None)),
        func.count().filter(attested & (Device.last_result != "ok")),
        func.count().filter(expired),
        func.count().filter(Device.last_attested_at.is_(None)),
        *(func.count().filter(Device.last_attested_at >= now - bound) for _, bound in SEEN_BUCKETS if bound),
        func.count().filter(Device.group_id.is_(None)),
        func.count().filter(Device.os_version.is_(None)),
    ]
    if by_filter:
        columns += [func.count().filter(Device.group_id == gid) for gid in groups]
        columns += [func.count().filter(Device.os_version == v) for v in versions]
    row = list(session.execute(select(*columns).where(Device.tenant_id == tenant_id)).one())
    total, revoked, never, failed, n_expired, unseen = (int(v) for v in row[:6])
    bounded = [label for label, bound in SEEN_BUCKETS if bound]
    within = [int(v) for v in row[6 : 6 + len(bounded)]]
    no_group, no_version = (int(v) for v in row[6 + len(bounded) : 8 + len(bounded)])
    rest = [int(v) for v in row[8 + len(bounded) :]]
    if by_filter:
        group_counts = dict(zip(groups, rest[: len(groups)], strict=True))
        version_counts = dict(zip(versions, rest[len(groups) :], strict=True))
        version_labels = {v: v for v in versions}
    else:
        group_counts, version_counts, version_labels = _grouped(session, tenant_id, groups)
    if by_filter and total - no_version - sum(version_counts.values()) > 0:
        # Devices on a version the tenant never published (or no longer lists): name them all.
        version_counts = _version_counts(session, tenant_id)
        version_labels = {v: v for v in version_counts}
    seen_rows = []
    previous = 0
    for label, n in zip(bounded, within, strict=True):  # cumulative counts -> per bucket
        seen_rows.append(Count(label=label, value=n - previous, key=label))
        previous = n
    seen_rows.append(Count(label="older", value=total - unseen - previous, key="older"))
    seen_rows.append(Count(label=NEVER, value=unseen, key=NEVER))
    standing = {
        "ok": total - revoked - never - failed - n_expired,
        "failed": failed,
        "expired": n_expired,
        "revoked": revoked,
        "never": never,
    }
    return FleetOverview(
        total=total,
        by_os_version=_breakdown(version_labels, version_counts, total, no_version)[: MAX_GROUP_ROWS + 2],
        by_group=_breakdown(groups, group_counts, total, no_group)[: MAX_GROUP_ROWS + 2],
        by_standing=[Count(label=s, value=standing[s], key=s) for s in STANDINGS],
        by_last_seen=seen_rows,
        activity=activity,
        window=window,
    )


def _version_counts(session: Session, tenant_id: str) -> dict[str, int]:
    return {
        str(version): int(n)
        for version, n in session.execute(
            select(Device.os_version, func.count())
            .where(Device.tenant_id == tenant_id, Device.os_version.is_not(None))
            .group_by(Device.os_version)
            .order_by(func.count().desc())
            .limit(MAX_GROUP_ROWS)
        )
    }


def _grouped(
    session: Session, tenant_id: str, groups: dict[str, str]
) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """Counts per group and OS version by ``GROUP BY`` (a tenant past :data:`MAX_GROUP_ROWS` of either)."""
    by_group: dict[str, int] = {}
    for gid, n in session.execute(
        select(Device.group_id, func.count())
        .where(Device.tenant_id == tenant_id, Device.group_id.is_not(None))
        .group_by(Device.group_id)
    ):
        by_group[str(gid)] = int(n)
    names = dict(groups)
    missing = [g for g in by_group if g not in names]
    if missing:
        names.update(_group_names(session, tenant_id, missing[: MAX_GROUP_ROWS * 4]))
    by_group = {g: n for g, n in by_group.items() if g in names}
    by_version: dict[str, int] = {}
    for version, n in session.execute(
        select(Device.os_version, func.count())
        .where(Device.tenant_id == tenant_id, Device.os_version.is_not(None))
        .group_by(Device.os_version)
    ):
        by_version[str(version)] = int(n)
    groups.update(names)
    return by_group, by_version, {v: v for v in by_version}


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
        (ok if result == "ok" else failed)[bucket_key(key, step)] += n
    return [ActivityPoint(start=start, ok=ok[key], failed=failed[key]) for key, start in keys]
