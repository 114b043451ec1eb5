"""One device group: its policy, feed and maintenance window, its members' standing and OS versions, its deployments.

Example:
    >>> view = group_view(session, tenant_id, group)  # doctest: +SKIP
    >>> view.window, view.devices  # doctest: +SKIP
    ('02:00-04:00 UTC', 7)

The members themselves are paged on the server by the device list's query
(:func:`bastion.service.console.pages._device_queries.device_rows`); here are the
counts (each one ``GROUP BY``) and the newest deployments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.console.charts import MAX_BARS
from bastion.service.console.views.deployments import DeploymentRow, deployments_page
from bastion.service.console.views.products import window_text
from bastion.service.fleet.policy import DEFAULT_GROUPS
from bastion.service.models import Device, DeviceGroup, GroupAppraisalPolicy, Product

__all__ = ["DEPLOYMENT_ROWS", "GroupView", "group_view"]

#: Deployments shown on a group's page (the deployment list, filtered by the group, has the rest).
DEPLOYMENT_ROWS = 10
_DEFAULT_NAMES = frozenset(g.name for g in DEFAULT_GROUPS)


@dataclass(frozen=True)
class GroupView:
    """A device group as its page shows it."""

    id: str
    name: str
    product_id: str
    product_name: str
    update_policy: str
    os_feed: str
    window: str
    window_start: str | None
    window_minutes: int | None
    relaxed_rules: Sequence[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    #: One of the product's default groups (kept with the product: neither renamed nor deleted alone).
    is_default: bool
    devices: int
    #: Devices in development mode that come back to this group when they leave it.
    returning: int
    by_os: Sequence[tuple[str, int]]
    deployments: Sequence[DeploymentRow]
    more_deployments: bool

    @property
    def label(self) -> str:
        """``product/group``, as the device list and the CLI name it."""
        return f"{self.product_name}/{self.name}"


def _os_versions(session: Session, tenant_id: str, group_id: str) -> list[tuple[str, int]]:
    """The members' OS versions, most common first (at most the bars a chart draws; the rest are "other")."""
    count = func.count().label("n")
    rows = session.execute(
        select(Device.os_version, count)
        .where(Device.tenant_id == tenant_id, Device.group_id == group_id)
        .group_by(Device.os_version)
        .order_by(count.desc(), Device.os_version)
        .limit(MAX_BARS + 1)
    ).all()
    found = [(version or "none yet", int(n)) for version, n in rows]
    if len(found) > MAX_BARS:  # the chart sums what it cannot draw; say how many that is
        shown = sum(n for _, n in found[: MAX_BARS - 1])
        total = int(
            session.scalar(select(func.count()).where(Device.tenant_id == tenant_id, Device.group_id == group_id)) or 0
        )
        found = [*found[: MAX_BARS - 1], ("other", total - shown)]
    return found


def group_view(session: Session, tenant_id: str, group: DeviceGroup) -> GroupView:
    """The page's facts and counts for one of the tenant's groups (already looked up and checked)."""
    product_name = session.scalar(select(Product.name).where(Product.id == group.product_id)) or ""
    devices = int(
        session.scalar(select(func.count()).where(Device.tenant_id == tenant_id, Device.group_id == group.id)) or 0
    )
    returning = int(
        session.scalar(
            select(func.count()).where(
                Device.tenant_id == tenant_id,
                Device.group_before_development == group.id,
                Device.group_id != group.id,
            )
        )
        or 0
    )
    relaxed = session.scalar(
        select(GroupAppraisalPolicy.relaxed).where(
            GroupAppraisalPolicy.tenant_id == tenant_id, GroupAppraisalPolicy.group_id == group.id
        )
    )
    page = deployments_page(session, tenant_id, offset=0, limit=DEPLOYMENT_ROWS + 1, group_id=group.id)
    return GroupView(
        id=group.id,
        name=group.name,
        product_id=group.product_id,
        product_name=product_name,
        update_policy=group.update_policy,
        os_feed=group.os_feed,
        window=window_text(group.window_start, group.window_minutes),
        window_start=group.window_start,
        window_minutes=group.window_minutes,
        relaxed_rules=list(relaxed or []),
        created_at=group.created_at,
        updated_at=group.updated_at,
        is_default=group.name in _DEFAULT_NAMES,
        devices=devices,
        returning=returning,
        by_os=_os_versions(session, tenant_id, group.id) if devices else [],
        deployments=list(page.rows[:DEPLOYMENT_ROWS]),
        more_deployments=len(page.rows) > DEPLOYMENT_ROWS,
    )
