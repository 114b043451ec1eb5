"""Queries of the fleet model. Every function takes the tenant, so no query crosses tenants."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bastion.service.fleet.policy import OsFeed, UpdatePolicy
from bastion.service.models import AppImage, Deployment, DeploymentImage, DeviceGroup, OsImage, Product, Rollout

__all__ = [
    "current_deployment",
    "deployment_images",
    "deployment_rollout",
    "feed_os_images",
    "find_group",
    "find_product",
    "groups_following",
    "list_groups",
    "list_products",
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
