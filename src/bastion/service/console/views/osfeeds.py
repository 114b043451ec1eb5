"""OS feeds: what each feed offers, which groups follow it, the evaluation images that can be
promoted to retail, and the OS rollouts under way.

``retail`` offers images published there and promoted evaluation images;
``retail-eval`` offers every non-revoked image
(:func:`bastion.service.fleet.repository.feed_os_images`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.service.fleet import repository as fleet_repository
from bastion.service.fleet.policy import OsFeed
from bastion.service.models import DeviceGroup, OsImage, Product, Rollout

__all__ = [
    "MAX_FEED_IMAGES",
    "MAX_OS_ROLLOUTS",
    "FeedView",
    "OsFeedsView",
    "OsImageRow",
    "OsRolloutRow",
    "osfeeds_view",
]

#: Bound on the images listed per feed (newest first).
MAX_FEED_IMAGES = 100
#: Bound on the OS rollouts listed (newest first).
MAX_OS_ROLLOUTS = 20


@dataclass(frozen=True)
class OsImageRow:
    """One OS image on a feed."""

    id: int
    version: str
    measurement: str
    security_version: int
    published_at: dt.datetime
    published_on: str
    promoted_at: dt.datetime | None
    promotable: bool


@dataclass(frozen=True)
class FeedView:
    """One feed: its images newest first, and the groups that take OS updates from it."""

    name: str
    images: Sequence[OsImageRow]
    groups: Sequence[str]


@dataclass(frozen=True)
class OsRolloutRow:
    """A staged OS rollout to one group."""

    id: int
    group_name: str
    version: str
    state: str
    stage: int
    stages: int
    percent: float
    halt_reason: str | None


@dataclass(frozen=True)
class OsFeedsView:
    """The OS feeds page."""

    feeds: Sequence[FeedView]
    rollouts: Sequence[OsRolloutRow]


def _row(image: OsImage) -> OsImageRow:
    return OsImageRow(
        id=image.id,
        version=image.version,
        measurement=image.measurement,
        security_version=image.security_version,
        published_at=image.published_at,
        published_on=image.feed,
        promoted_at=image.promoted_at,
        promotable=image.feed == OsFeed.RETAIL_EVAL.value and image.promoted_at is None and image.revoked_at is None,
    )


def _names(session: Session, tenant_id: str) -> dict[str, str]:
    rows = session.execute(
        select(DeviceGroup.id, DeviceGroup.name, Product.name)
        .join(Product, Product.id == DeviceGroup.product_id)
        .where(DeviceGroup.tenant_id == tenant_id)
    ).all()
    return {gid: f"{product}/{name}" for gid, name, product in rows}


def osfeeds_view(session: Session, tenant_id: str) -> OsFeedsView:
    """Both feeds of the tenant and its recent OS rollouts."""
    names = _names(session, tenant_id)
    feeds = []
    for feed in (OsFeed.RETAIL, OsFeed.RETAIL_EVAL):
        images = sorted(fleet_repository.feed_os_images(session, tenant_id, feed), key=lambda i: -i.id)
        groups = fleet_repository.groups_following(session, tenant_id, [feed])
        feeds.append(
            FeedView(
                name=feed.value,
                images=[_row(i) for i in images[:MAX_FEED_IMAGES]],
                groups=sorted(names.get(g.id, g.name) for g in groups),
            )
        )
    rows = session.execute(
        select(Rollout, OsImage.version)
        .join(OsImage, OsImage.id == Rollout.os_image_id)
        .where(Rollout.tenant_id == tenant_id, Rollout.kind == "os")
        .order_by(Rollout.id.desc())
        .limit(MAX_OS_ROLLOUTS)
    ).all()
    return OsFeedsView(
        feeds=feeds,
        rollouts=[
            OsRolloutRow(
                id=r.id,
                group_name=names.get(r.group_id, r.group_id),
                version=version,
                state=r.state,
                stage=r.stage + 1,
                stages=len(r.stages),
                percent=int(r.stages[r.stage]) / 100,
                halt_reason=r.halt_reason,
            )
            for r, version in rows
        ],
    )
