"""Queries of the fleet model. Every function takes the tenant, so no query crosses tenants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bastion.service.fleet.policy import OsFeed, UpdatePolicy
from bastion.service.models import (
    AppImage,
    Deployment,
    DeploymentImage,
    DeviceGroup,
    OsBlocklistClear,
    OsImage,
    Product,
    Rollout,
)

__all__ = [
    "current_deployment",
    "deployment_images",
    "deployment_rollout",
    "feed_os_images",
    "find_group",
    "find_product",
    "groups_following",
    "hold_group",
    "list_groups",
    "list_products",
    "lock_for_delete",
    "os_rollout",
]


def find_product(session: Session, tenant_id: str, ref: str) -> Product | None:
    """The tenant's product whose id or name is ``ref``."""
    by_id = session.get(Product, ref)
    if by_id is not None and by_id.tenant_id == tenant_id:
        return by_id
    return session.scalar(select(Product).where(Product.tenant_id == tenant_id, Product.name == ref))


def list_products(session: Session, tenant_id: str, *, limit: int) -> Sequence[Product]:
    """The tenant's products by name."""
    query = select(Product).where(Product.tenant_id == tenant_id).order_by(Product.name).limit(limit)
    return session.scalars(query).all()


def find_group(session: Session, tenant_id: str, ref: str) -> DeviceGroup | None:
    """The tenant's device group whose id is ``ref``, or named ``"<product>/<group>"``."""
    if "/" in ref:
        product_name, _, group_name = ref.partition("/")
        query = (
            select(DeviceGroup)
            .join(Product, Product.id == DeviceGroup.product_id)
            .where(Product.tenant_id == tenant_id, Product.name == product_name, DeviceGroup.name == group_name)
        )
        return session.scalar(query)
    group = session.get(DeviceGroup, ref)
    return group if group is not None and group.tenant_id == tenant_id else None


def list_groups(session: Session, tenant_id: str, *, product_id: str | None, limit: int) -> Sequence[DeviceGroup]:
    """The tenant's device groups (of one product if given), by product then creation."""
    query = select(DeviceGroup).where(DeviceGroup.tenant_id == tenant_id)
    if product_id is not None:
        query = query.where(DeviceGroup.product_id == product_id)
    query = query.order_by(DeviceGroup.product_id, DeviceGroup.created_at, DeviceGroup.name).limit(limit)
    return session.scalars(query).all()


#: A no-op write touches no loaded object: nothing to synchronize.
_NO_SYNC = {"synchronize_session": False}


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def lock_for_delete(session: Session, *, product_id: str | None = None, group_ids: Sequence[str] = ()) -> None:
    """Hold a product and groups about to be deleted, so the checks that follow stay true until commit.

    PostgreSQL: ``SELECT ... FOR UPDATE`` on their rows. That conflicts with the
    ``FOR KEY SHARE`` lock an insert or update takes on the row its foreign key
    names (a device put into a group, a deployment or rollout for it, a group added
    to the product): a writer already under way makes this wait, and the checks then
    see its row; a later one waits for this transaction and then fails its
    foreign key instead of pointing at a deleted row.
    SQLite: it has one writer at a time, so a first (no-op) write takes the
    database's write lock; nobody else commits until this transaction ends, and
    the checks read the final state.

    Lock the product before listing its groups (a group added meanwhile waits).
    """
    if _is_sqlite(session):
        if product_id is not None:
            session.execute(
                update(Product).where(Product.id == product_id).values(name=Product.name), execution_options=_NO_SYNC
            )
        elif group_ids:
            session.execute(
                update(DeviceGroup).where(DeviceGroup.id == group_ids[0]).values(updated_at=DeviceGroup.updated_at),
                execution_options=_NO_SYNC,
            )
        return
    if product_id is not None:
        session.execute(select(Product.id).where(Product.id == product_id).with_for_update())
    if group_ids:
        session.execute(
            select(DeviceGroup.id).where(DeviceGroup.id.in_(group_ids)).order_by(DeviceGroup.id).with_for_update()
        )


def hold_group(session: Session, group_id: str) -> bool:
    """Whether the group still exists, held so it stays until this transaction ends (for a reference without a FK).

    PostgreSQL: ``FOR KEY SHARE``, which waits for a delete under way
    (:func:`lock_for_delete`) and then finds no row. SQLite: a no-op write takes the
    write lock first, so no delete commits between this read and the commit.
    """
    if _is_sqlite(session):
        held = session.execute(
            update(DeviceGroup).where(DeviceGroup.id == group_id).values(updated_at=DeviceGroup.updated_at),
            execution_options=_NO_SYNC,
        )
        return bool(getattr(held, "rowcount", 0))
    found = session.scalar(
        select(DeviceGroup.id).where(DeviceGroup.id == group_id).with_for_update(read=True, key_share=True)
    )
    return found is not None


def groups_following(session: Session, tenant_id: str, feeds: Sequence[OsFeed]) -> Sequence[DeviceGroup]:
    """The tenant's groups on one of ``feeds`` whose policy lets OS updates through."""
    query = select(DeviceGroup).where(
        DeviceGroup.tenant_id == tenant_id,
        DeviceGroup.os_feed.in_([f.value for f in feeds]),
        DeviceGroup.update_policy != UpdatePolicy.NO_UPDATES.value,
    )
    return session.scalars(query.order_by(DeviceGroup.id)).all()


def feed_os_images(session: Session, tenant_id: str, feed: OsFeed) -> Sequence[OsImage]:
    """The tenant's non-revoked OS images visible on ``feed``.

    ``retail`` shows images published there plus promoted evaluation images;
    ``retail-eval`` shows everything (the evaluation feed runs ahead of retail).
    """
    query = select(OsImage).where(OsImage.tenant_id == tenant_id, OsImage.revoked_at.is_(None))
    if feed is OsFeed.RETAIL:
        query = query.where(or_(OsImage.feed == OsFeed.RETAIL.value, OsImage.promoted_at.is_not(None)))
    return session.scalars(query.order_by(OsImage.id)).all()


def current_deployment(session: Session, group_id: str) -> Deployment | None:
    """The group's newest deployment."""
    query = select(Deployment).where(Deployment.group_id == group_id).order_by(Deployment.id.desc()).limit(1)
    return session.scalar(query)


def deployment_images(session: Session, deployment_id: int) -> Sequence[AppImage]:
    """The app images of a deployment, by component id."""
    query = (
        select(AppImage)
        .join(DeploymentImage, DeploymentImage.image_id == AppImage.id)
        .where(DeploymentImage.deployment_id == deployment_id)
        .order_by(AppImage.component_id)
    )
    return session.scalars(query).all()


def deployment_rollout(session: Session, deployment_id: int) -> Rollout | None:
    """The staged rollout of a deployment, if it was created with stages."""
    query = select(Rollout).where(Rollout.deployment_id == deployment_id).order_by(Rollout.id.desc()).limit(1)
    return session.scalar(query)


def os_rollout(session: Session, group_id: str, os_image_id: int) -> Rollout | None:
    """The staged rollout of an OS image's promotion to a group, if it was promoted with stages."""
    query = (
        select(Rollout)
        .where(Rollout.group_id == group_id, Rollout.os_image_id == os_image_id)
        .order_by(Rollout.id.desc())
        .limit(1)
    )
    return session.scalar(query)


#: Clears a group's targets carry (the newest; the device reads at most as many, ADR 0018).
MAX_SIGNED_CLEARS = 64


def signed_blocklist_clears(session: Session, group_id: str) -> list[dict[str, Any]]:
    """The OS blocklist clears signed into a group's targets ``custom`` (newest :data:`MAX_SIGNED_CLEARS`)."""
    query = (
        select(OsBlocklistClear)
        .where(OsBlocklistClear.group_id == group_id)
        .order_by(OsBlocklistClear.id.desc())
        .limit(MAX_SIGNED_CLEARS)
    )
    return [
        {"id": f"c{c.id}", "sha256": c.sha256, "devices": None if c.device_id is None else [c.device_id]}
        for c in session.scalars(query)
    ]
