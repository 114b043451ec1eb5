"""Products and their device groups: update policy, OS feed, maintenance window, devices, current deployment.

Example:
    >>> page = products_page(session, tenant_id, offset=0, limit=20)  # doctest: +SKIP
    >>> [(g.name, g.window) for g in page.products[0].groups]  # doctest: +SKIP
    [('Field Test', 'any time'), ('Production', '02:00-04:00 UTC')]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.models import Deployment, Device, DeviceGroup, GroupAppraisalPolicy, Product

__all__ = ["GroupRow", "ProductRow", "ProductsPage", "products_page", "window_text"]


@dataclass(frozen=True)
class GroupRow:
    """One device group as the products page shows it."""

    id: str
    name: str
    update_policy: str
    os_feed: str
    window: str
    devices: int
    current_deployment: int | None
    relaxed_rules: Sequence[str]
    updated_at: dt.datetime


@dataclass(frozen=True)
class ProductRow:
    """A product with its groups."""

    id: str
    name: str
    description: str
    created_at: dt.datetime
    groups: Sequence[GroupRow]


@dataclass(frozen=True)
class ProductsPage:
    """One page of products (by name) and how many the tenant has."""

    products: Sequence[ProductRow]
    total: int
    offset: int
    limit: int


def window_text(start: str | None, minutes: int | None) -> str:
    """A maintenance window for people: ``02:00-04:00 UTC``, or ``any time`` when the group has none."""
    if start is None or not minutes:
        return "any time"
    hours, mins = (int(part) for part in start.split(":", 1))
    end = (hours * 60 + mins + minutes) % (24 * 60)
    return f"{start}-{end // 60:02d}:{end % 60:02d} UTC"


def products_page(
    session: Session, tenant_id: str, *, offset: int, limit: int, name_prefix: str | None = None
) -> ProductsPage:
    """A page of the tenant's products with their groups (device counts by one ``GROUP BY``)."""
    query = select(Product).where(Product.tenant_id == tenant_id)
    if name_prefix:
        query = query.where(Product.name.startswith(name_prefix, autoescape=True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    products = session.scalars(query.order_by(Product.name, Product.id).offset(offset).limit(limit)).all()
    ids = [p.id for p in products]
    groups = (
        session.scalars(
            select(DeviceGroup)
            .where(DeviceGroup.tenant_id == tenant_id, DeviceGroup.product_id.in_(ids))
            .order_by(DeviceGroup.name, DeviceGroup.id)
        ).all()
        if ids
        else []
    )
    group_ids = [g.id for g in groups]
    counts: dict[str | None, int] = {}
    current: dict[str, int] = {}
    relaxed: dict[str, list[str]] = {}
    if group_ids:
        counts = dict(
            session.execute(
                select(Device.group_id, func.count())
                .where(Device.tenant_id == tenant_id, Device.group_id.in_(group_ids))
                .group_by(Device.group_id)
            ).all()
        )
        current = dict(
            session.execute(
                select(Deployment.group_id, func.max(Deployment.id))
                .where(Deployment.tenant_id == tenant_id, Deployment.group_id.in_(group_ids))
                .group_by(Deployment.group_id)
            ).all()
        )
        relaxed = {
            p.group_id: list(p.relaxed)
            for p in session.scalars(
                select(GroupAppraisalPolicy).where(
                    GroupAppraisalPolicy.tenant_id == tenant_id, GroupAppraisalPolicy.group_id.in_(group_ids)
                )
            )
        }
    rows_of: dict[str, list[GroupRow]] = {pid: [] for pid in ids}
    for g in groups:
        rows_of[g.product_id].append(
            GroupRow(
                id=g.id,
                name=g.name,
                update_policy=g.update_policy,
                os_feed=g.os_feed,
                window=window_text(g.window_start, g.window_minutes),
                devices=counts.get(g.id, 0),
                current_deployment=current.get(g.id),
                relaxed_rules=relaxed.get(g.id, []),
                updated_at=g.updated_at,
            )
        )
    return ProductsPage(
        products=[
            ProductRow(id=p.id, name=p.name, description=p.description, created_at=p.created_at, groups=rows_of[p.id])
            for p in products
        ],
        total=total,
        offset=offset,
        limit=limit,
    )
