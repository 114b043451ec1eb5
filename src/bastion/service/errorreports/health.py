"""Release health: crash-free device rates per release, new buckets, and the fleet health views.

The rollout gate (staged deployments) and ``bastion fleet health`` read the same
two tables errsvc's ingest writes (migration 0015):

* the population: ``device_release_activity``, a row per device, release and day
  the device was seen running the release (an error-report batch, the empty
  check-in batch included, or a status report);
* the crashes: ``error_events``, the raw records (kept for the raw retention).

A device counts as crashed for an app release when it has at least one
``AppCrash`` or ``Watchdog`` record of that component and version in the window;
for an OS release (``component_id ""``, ``version`` = the OS version) when it has
any ``AppCrash``/``Watchdog`` record or an ``OS``/``os_crash`` record sent while
it ran that OS version. Only devices of the population count, so the rate is in
[0, 1]. Every function is one aggregate statement over the release indexes
(``ix_device_release_activity_release``, ``ix_error_events_tenant_release``,
``ix_error_events_tenant_os``), never a Python loop over rows.

Example:
    >>> import datetime as dt
    >>> from sqlalchemy.orm import Session
    >>> def gate(session: Session, tenant_id: str, now: dt.datetime) -> float | None:
    ...     h = release_health(session, tenant_id, component_id="app1", version="2.0.0",
    ...                        since=now - dt.timedelta(hours=1), until=now)
    ...     return h.crash_free_rate
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from bastion.service.models import (
    AppImage,
    Deployment,
    DeploymentImage,
    DeviceGroup,
    DeviceReleaseActivity,
    ErrorBucket,
    ErrorBucketVersion,
    ErrorEvent,
)

__all__ = [
    "APP_CRASH_CATEGORIES",
    "MAX_DEVICE_IDS_PER_QUERY",
    "MAX_FLEET_HEALTH_ROWS",
    "OS_COMPONENT",
    "FleetHealthRow",
    "ReleaseHealth",
    "fleet_health",
    "new_buckets",
    "release_health",
]

#: The ``component_id`` of OS releases and OS-wide records.
OS_COMPONENT = ""
#: Record categories that make a device "crashed" for the release that sent them.
APP_CRASH_CATEGORIES = ("AppCrash", "Watchdog")
#: The OS record that makes a device "crashed" for its OS release.
OS_CRASH = ("OS", "os_crash")
#: Device IDs bound into one statement (below SQLite's and PostgreSQL's parameter limits);
#: a larger ``device_ids`` is split into disjoint chunks whose counts add up exactly.
MAX_DEVICE_IDS_PER_QUERY = 5000
#: Rows one fleet-health view returns at most (deployments, OS versions or groups).
MAX_FLEET_HEALTH_ROWS = 500

HealthBy = Literal["deployment", "os", "group"]


@dataclass(frozen=True)
class ReleaseHealth:
    """The crash-free rate of one release over a window.

    Attributes:
        devices: devices seen running the release in the window (heartbeat, status or report).
        crashed_devices: of them, devices with at least one crash record for the release.
        crash_free_rate: ``1 - crashed/devices``; None when ``devices == 0``.
    """

    devices: int
    crashed_devices: int
    crash_free_rate: float | None


def _rate(devices: int, crashed: int) -> float | None:
    return None if devices == 0 else (devices - crashed) / devices


def _seen(since: dt.datetime, until: dt.datetime) -> list[ColumnElement[bool]]:
    """Activity rows that overlap ``[since, until]`` (``day`` first: it is in the index)."""
    a = DeviceReleaseActivity
    return [a.day >= since.date(), a.day <= until.date(), a.last_seen >= since, a.first_seen <= until]


def _in_window(since: dt.datetime, until: dt.datetime) -> list[ColumnElement[bool]]:
    """Error records that overlap ``[since, until]``."""
    return [ErrorEvent.last_at >= since, ErrorEvent.first_at <= until]


def _os_crash() -> ColumnElement[bool]:
    e = ErrorEvent
    return or_(e.category.in_(APP_CRASH_CATEGORIES), and_(e.category == OS_CRASH[0], e.event_type == OS_CRASH[1]))


def _release_counts(
    session: Session,
    tenant_id: str,
    *,
    component_id: str,
    version: str,
    since: dt.datetime,
    until: dt.datetime,
    group_id: str | None,
    device_ids: Sequence[str] | None,
) -> tuple[int, int]:
    a, e = DeviceReleaseActivity, ErrorEvent
    population = select(a.device_id).where(
        a.tenant_id == tenant_id, a.component_id == component_id, a.version == version, *_seen(since, until)
    )
    crash = select(func.count(e.device_id.distinct())).where(e.tenant_id == tenant_id, *_in_window(since, until))
    if component_id == OS_COMPONENT:
        crash = crash.where(e.os_version == version, _os_crash())
    else:
        crash = crash.where(e.component_id == component_id, e.version == version, e.category.in_(APP_CRASH_CATEGORIES))
    if group_id is not None:
        population = population.where(a.group_id == group_id)
        crash = crash.where(e.group_id == group_id)
    if device_ids is not None:
        population = population.where(a.device_id.in_(device_ids))
        crash = crash.where(e.device_id.in_(device_ids))
    devices = select(func.count(population.subquery().c.device_id.distinct()))
    crashed = crash.where(e.device_id.in_(population))
    row = session.execute(select(devices.scalar_subquery(), crashed.scalar_subquery())).one()
    return int(row[0] or 0), int(row[1] or 0)


def release_health(
    session: Session,
    tenant_id: str,
    *,
    component_id: str,
    version: str,
    since: dt.datetime,
    until: dt.datetime,
    group_id: str | None = None,
    device_ids: Collection[str] | None = None,
) -> ReleaseHealth:
    """The crash-free device rate of one release (``component_id ""`` for an OS release) in ``[since, until]``.

    Args:
        group_id: only devices seen in this group (and their records sent from it).
        device_ids: only these devices (a rollout stage); any size (split into bounded chunks).
    """
    if device_ids is not None and not device_ids:
        return ReleaseHealth(devices=0, crashed_devices=0, crash_free_rate=None)
    chunks: list[Sequence[str] | None]
    if device_ids is None:
        chunks = [None]
    else:
        ids = sorted(set(device_ids))
        chunks = [ids[i : i + MAX_DEVICE_IDS_PER_QUERY] for i in range(0, len(ids), MAX_DEVICE_IDS_PER_QUERY)]
    devices = crashed = 0
    for chunk in chunks:  # disjoint device sets: the distinct counts add up
        d, c = _release_counts(
            session,
            tenant_id,
            component_id=component_id,
            version=version,
            since=since,
            until=until,
            group_id=group_id,
            device_ids=chunk,
        )
        devices, crashed = devices + d, crashed + c
    return ReleaseHealth(devices=devices, crashed_devices=crashed, crash_free_rate=_rate(devices, crashed))


def new_buckets(
    session: Session,
    tenant_id: str,
    *,
    component_id: str,
    version: str,
    since: dt.datetime,
    device_ids: Collection[str] | None = None,
) -> list[str]:
    """Bucket IDs first seen in this release (component + version) at or after ``since``, oldest first.

    A bucket is new when nothing of it (in any version) was seen before ``since``
    and this version has records in it: a crash the previous release already had
    is not new, one that appeared with this release is.

    Args:
        device_ids: only buckets these devices (a rollout stage) reported in this version; without it any
            device of the tenant, also one outside the stage or the group, could halt a rollout.
    """
    b, v, e = ErrorBucket, ErrorBucketVersion, ErrorEvent
    query = (
        select(b.first_seen, b.id)
        .join(v, and_(v.bucket_id == b.id, v.version == version))
        .where(b.tenant_id == tenant_id, b.component_id == component_id, b.first_seen >= since)
    )
    if device_ids is None:
        return [str(row[1]) for row in session.execute(query.order_by(b.first_seen, b.id)).all()]
    ids = sorted(set(device_ids))
    found: set[tuple[dt.datetime, str]] = set()
    for i in range(0, len(ids), MAX_DEVICE_IDS_PER_QUERY):
        reported = (
            select(e.id)
            .where(e.bucket_id == b.id, e.version == version, e.device_id.in_(ids[i : i + MAX_DEVICE_IDS_PER_QUERY]))
            .exists()
        )
        found.update((row[0], str(row[1])) for row in session.execute(query.where(reported)).all())
    return [bid for _, bid in sorted(found)]


@dataclass(frozen=True)
class FleetHealthRow:
    """One line of ``fleet health``: a deployment, an OS version or a group.

    Attributes:
        key: the deployment ID, the OS version or the group ID.
        label: what the key names (the deployment's releases, ``OS x.y.z``, the group's name).
        group_id: the group (deployment and group views; None for an OS version).
        releases: the ``component@version`` releases counted (deployment view; empty otherwise).
    """

    key: str
    label: str
    group_id: str | None
    releases: tuple[str, ...]
    devices: int
    crashed_devices: int
    crash_free_rate: float | None


def _by_os(session: Session, tenant_id: str, since: dt.datetime, until: dt.datetime) -> list[FleetHealthRow]:
    a, e = DeviceReleaseActivity, ErrorEvent
    pop = (
        select(a.version.label("version"), a.device_id.label("device_id"))
        .where(a.tenant_id == tenant_id, a.component_id == OS_COMPONENT, *_seen(since, until))
        .distinct()
        .cte("pop")
    )
    crash = (
        select(e.os_version.label("version"), e.device_id.label("device_id"))
        .where(e.tenant_id == tenant_id, *_in_window(since, until), _os_crash())
        .distinct()
        .cte("crash")
    )
    query = (
        select(pop.c.version, func.count(), func.count(crash.c.device_id))
        .select_from(pop.outerjoin(crash, and_(crash.c.version == pop.c.version, crash.c.device_id == pop.c.device_id)))
        .group_by(pop.c.version)
        .order_by(pop.c.version)
        .limit(MAX_FLEET_HEALTH_ROWS)
    )
    return [
        FleetHealthRow(
            key=str(version),
            label=f"OS {version}",
            group_id=None,
            releases=(),
            devices=int(devices),
            crashed_devices=int(crashed),
            crash_free_rate=_rate(int(devices), int(crashed)),
        )
        for version, devices, crashed in session.execute(query).all()
    ]


def _by_group(session: Session, tenant_id: str, since: dt.datetime, until: dt.datetime) -> list[FleetHealthRow]:
    a, e, g = DeviceReleaseActivity, ErrorEvent, DeviceGroup
    # Every check-in writes the OS row, so the OS rows are the group's whole population.
    pop = (
        select(a.group_id.label("group_id"), a.device_id.label("device_id"))
        .where(a.tenant_id == tenant_id, a.component_id == OS_COMPONENT, *_seen(since, until))
        .distinct()
        .cte("pop")
    )
    crash = (
        select(e.group_id.label("group_id"), e.device_id.label("device_id"))
        .where(e.tenant_id == tenant_id, *_in_window(since, until), _os_crash())
        .distinct()
        .cte("crash")
    )
    joined = pop.outerjoin(
        crash,
        and_(crash.c.group_id.is_not_distinct_from(pop.c.group_id), crash.c.device_id == pop.c.device_id),
    ).outerjoin(g, g.id == pop.c.group_id)
    query = (
        select(pop.c.group_id, func.max(g.name), func.count(), func.count(crash.c.device_id))
        .select_from(joined)
        .group_by(pop.c.group_id)
        .order_by(func.max(g.name), pop.c.group_id)
        .limit(MAX_FLEET_HEALTH_ROWS)
    )
    rows = []
    for group_id, name, devices, crashed in session.execute(query).all():
        rows.append(
            FleetHealthRow(
                key=str(group_id) if group_id is not None else "",
                label=str(name) if name is not None else ("(no group)" if group_id is None else str(group_id)),
                group_id=group_id,
                releases=(),
                devices=int(devices),
                crashed_devices=int(crashed),
                crash_free_rate=_rate(int(devices), int(crashed)),
            )
        )
    return rows


def _by_deployment(session: Session, tenant_id: str, since: dt.datetime, until: dt.datetime) -> list[FleetHealthRow]:
    a, e, d, di, ai, g = DeviceReleaseActivity, ErrorEvent, Deployment, DeploymentImage, AppImage, DeviceGroup
    # The deployments shown: the newest ones created by the end of the window.
    deployments = session.execute(
        select(d.id, d.group_id, g.name)
        .outerjoin(g, g.id == d.group_id)
        .where(d.tenant_id == tenant_id, d.created_at <= until)
        .order_by(d.id.desc())
        .limit(MAX_FLEET_HEALTH_ROWS)
    ).all()
    if not deployments:
        return []
    ids = [row[0] for row in deployments]
    releases: dict[int, list[str]] = {i: [] for i in ids}
    # The deployment's releases on its group: devices of that group seen running one of its app images.
    pop = (
        select(d.id.label("deployment_id"), a.device_id, a.component_id, a.version, a.group_id)
        .join(di, di.deployment_id == d.id)
        .join(ai, ai.id == di.image_id)
        .join(
            a,
            and_(
                a.tenant_id == d.tenant_id,
                a.component_id == ai.component_id,
                a.version == ai.version,
                a.group_id == d.group_id,
            ),
        )
        .where(d.id.in_(ids), *_seen(since, until))
        .distinct()
        .cte("pop")
    )
    crash = (
        select(e.device_id, e.component_id, e.version, e.group_id)
        .where(e.tenant_id == tenant_id, *_in_window(since, until), e.category.in_(APP_CRASH_CATEGORIES))
        .distinct()
        .cte("crash")
    )
    crashed_device = crash.c.device_id
    query = (
        select(pop.c.deployment_id, func.count(pop.c.device_id.distinct()), func.count(crashed_device.distinct()))
        .select_from(
            pop.outerjoin(
                crash,
                and_(
                    crash.c.device_id == pop.c.device_id,
                    crash.c.component_id == pop.c.component_id,
                    crash.c.version == pop.c.version,
                    crash.c.group_id == pop.c.group_id,
                ),
            )
        )
        .group_by(pop.c.deployment_id)
    )
    counts: dict[int, tuple[int, int]] = {int(dep): (int(n), int(c)) for dep, n, c in session.execute(query).all()}
    image_rows = session.execute(
        select(di.deployment_id, ai.component_id, ai.version)
        .join(ai, ai.id == di.image_id)
        .where(di.deployment_id.in_(ids))
        .order_by(ai.component_id, ai.version)
    ).all()
    for dep, component, version in image_rows:
        releases[int(dep)].append(f"{component}@{version}")
    rows = []
    for dep_id, group_id, group_name in deployments:
        devices, crashed = counts.get(int(dep_id), (0, 0))
        rows.append(
            FleetHealthRow(
                key=str(dep_id),
                label=f"deployment {dep_id} on {group_name or group_id}",
                group_id=group_id,
                releases=tuple(releases[int(dep_id)]),
                devices=devices,
                crashed_devices=crashed,
                crash_free_rate=_rate(devices, crashed),
            )
        )
    return rows


def fleet_health(
    session: Session, tenant_id: str, *, by: HealthBy, since: dt.datetime, until: dt.datetime
) -> list[FleetHealthRow]:
    """The crash-free device rate per deployment, OS version or group, over ``[since, until]``.

    * ``deployment``: the tenant's newest deployments; the population of each is
      its group's devices seen running one of its app releases, crashed when one
      of those releases crashed on them (an ``AppCrash``/``Watchdog`` record).
    * ``os``: per OS version, as :func:`release_health` of the OS release.
    * ``group``: per group, devices that checked in from it; crashed on any
      ``AppCrash``/``Watchdog`` record or OS crash sent from it.

    One aggregate statement per view (plus, for deployments, the small lists of
    deployments and their images).
    """
    views: dict[str, Any] = {"deployment": _by_deployment, "os": _by_os, "group": _by_group}
    view = views.get(by)
    if view is None:
        raise ValueError(f"unknown fleet health view {by!r}")
    rows: list[FleetHealthRow] = view(session, tenant_id, since, until)
    return rows
