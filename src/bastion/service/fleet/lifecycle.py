"""Renaming and deleting products and device groups, refused while they are in use.

A device group is in use while a device is in it (or returns to it after
development mode), or a deployment, a staged rollout, a development capability
or an OS-blocklist clear names it: those keep history that points at the group,
so the operator moves the devices and the group stays. A product's five default
groups (:data:`~bastion.service.fleet.policy.DEFAULT_GROUPS`) belong to it: they
are neither renamed nor deleted on their own, and go with the product, which can
be deleted once it holds only its unused default groups. Every change and every
refusal is in the audit log. A deleted group's TUF repository files stay in the
blob store (a device may still hold their metadata); nothing serves them a new
version.

A delete is race-free: it locks the product's and groups' rows first
(:func:`~bastion.service.fleet.repository.lock_for_delete`), then checks, then
deletes, so a device, deployment or group added meanwhile either is seen by the
check (409 ``group_in_use``) or waits and then fails its own foreign key; nothing
is left pointing at a deleted group. Should a foreign key refuse the delete
anyway, that is a 409 ``changed_while_deleting``, never a 500.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.service.audit.service import record
from bastion.service.auth.service import Principal
from bastion.service.errors import Conflict
from bastion.service.fleet import repository
from bastion.service.fleet.policy import DEFAULT_GROUPS, parse_name
from bastion.service.fleet.service import get_group_for, get_product_for
from bastion.service.models import (
    Deployment,
    Device,
    DeviceCapability,
    DeviceGroup,
    GroupAppraisalPolicy,
    OsBlocklistClear,
    Product,
    Rollout,
)

__all__ = ["delete_group", "delete_product", "group_uses", "rename_group", "rename_product"]

_DEFAULT_NAMES = frozenset(g.name for g in DEFAULT_GROUPS)
#: Bound on the groups of one product looked at by a delete.
MAX_PRODUCT_GROUPS = 1000


def group_uses(session: Session, group_id: str) -> list[str]:
    """What keeps a group in use, e.g. ``["2 devices", "1 deployment"]`` (empty: it is not in use)."""
    counts = (
        (
            "device",
            select(func.count())
            .select_from(Device)
            .where(or_(Device.group_id == group_id, Device.group_before_development == group_id)),
        ),
        ("deployment", select(func.count()).select_from(Deployment).where(Deployment.group_id == group_id)),
        ("rollout", select(func.count()).select_from(Rollout).where(Rollout.group_id == group_id)),
        (
            "development capability",
            select(func.count()).select_from(DeviceCapability).where(DeviceCapability.group_id == group_id),
        ),
        (
            "OS blocklist clear",
            select(func.count()).select_from(OsBlocklistClear).where(OsBlocklistClear.group_id == group_id),
        ),
    )
    uses = []
    for noun, query in counts:
        n = int(session.scalar(query) or 0)
        if n:
            uses.append(f"{n} {noun}{'' if n == 1 else 's'}")
    return uses


def _refuse(
    session: Session, who: Principal, *, now: dt.datetime, action: str, target: str, why: str, code: str
) -> Conflict:
    """Record the refusal (committed: the request fails) and return the error to raise."""
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action=action,
        target=target,
        outcome="refused",
        detail=why,
    )
    session.commit()
    return Conflict(why, code=code)


def rename_product(session: Session, who: Principal, ref: str, new_name: str, *, now: dt.datetime) -> Product:
    """Rename one of the caller's products; commit.

    Raises:
        InvalidRequest: a bad name.
        NotFound: no such product in the caller's tenant.
        Conflict: the tenant has a product of that name (``product_exists``).
    """
    product = get_product_for(session, who, ref, action="product.rename", now=now)
    name = parse_name(new_name, "product")
    if name == product.name:
        return product
    exists = Conflict(f"your tenant already has a product named {name!r}", code="product_exists")
    if repository.find_product(session, who.tenant_id, name) is not None:
        raise exists
    old, product.name = product.name, name
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent rename or create
        session.rollback()
        raise exists from exc
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="product.rename",
        target=f"product:{product.id}",
        detail=f"name={old}->{name}",
    )
    session.commit()
    return product


def _changed(session: Session, who: Principal, *, now: dt.datetime, action: str, target: str, what: str) -> Conflict:
    """The delete met a row it did not check for (a foreign key refused it): roll back, record, 409."""
    session.rollback()
    why = (
        f"{what} changed while it was being deleted (something now uses it); nothing was deleted. "
        "Look at what uses it and try again"
    )
    return _refuse(session, who, now=now, action=action, target=target, why=why, code="changed_while_deleting")


def delete_product(session: Session, who: Principal, ref: str, *, now: dt.datetime) -> list[str]:
    """Delete one of the caller's products with its default groups; commit; return the groups' ids.

    The caller removes their TUF repositories (:func:`fleet.targets.remove_repositories`).

    The product's row and its groups' are locked before the checks (see the module docstring).

    Raises:
        NotFound: no such product in the caller's tenant.
        Conflict: it has groups of its own (``product_in_use``), a group is in use (``group_in_use``),
            or something started to use it during the delete (``changed_while_deleting``).
    """
    product = get_product_for(session, who, ref, action="product.delete", now=now)
    product_id, product_name = product.id, product.name
    target = f"product:{product_id}"
    repository.lock_for_delete(session, product_id=product_id)
    groups: Sequence[DeviceGroup] = repository.list_groups(
        session, who.tenant_id, product_id=product_id, limit=MAX_PRODUCT_GROUPS
    )
    ids = [g.id for g in groups]
    repository.lock_for_delete(session, group_ids=ids)
    extra = sorted(g.name for g in groups if g.name not in _DEFAULT_NAMES)
    if extra:
        why = (
            f"product {product_name!r} still has device groups of its own ({', '.join(extra[:5])}); "
            "delete them first with 'bastion device-group delete'"
        )
        raise _refuse(session, who, now=now, action="product.delete", target=target, why=why, code="product_in_use")
    for group in groups:
        uses = group_uses(session, group.id)
        if uses:
            why = (
                f"product {product_name!r} is in use: its group {group.name!r} has {', '.join(uses)}; "
                "move its devices to another group first ('bastion device assign')"
            )
            raise _refuse(session, who, now=now, action="product.delete", target=target, why=why, code="group_in_use")
    try:
        session.execute(delete(GroupAppraisalPolicy).where(GroupAppraisalPolicy.group_id.in_(ids)))
        session.execute(delete(DeviceGroup).where(DeviceGroup.id.in_(ids)))
        session.execute(delete(Product).where(Product.id == product_id))
        record(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="product.delete",
            target=target,
            detail=f"name={product_name} groups={len(ids)}",
        )
        for group_id in ids:  # each group's deletion on record (the TUF reconcile removes by it)
            record(
                session,
                now=now,
                tenant_id=who.tenant_id,
                actor=who.actor,
                action="device_group.delete",
                target=f"device_group:{group_id}",
                detail=f"with product {product_name}"[:200],
            )
        session.commit()
    except IntegrityError as exc:
        raise _changed(
            session, who, now=now, action="product.delete", target=target, what=f"product {product_name!r}"
        ) from exc
    return list(ids)


def _refuse_default(session: Session, who: Principal, group: DeviceGroup, *, now: dt.datetime, action: str) -> None:
    if group.name in _DEFAULT_NAMES:
        why = (
            f"{group.name!r} is one of the product's default groups; it keeps its name and goes only with the "
            "product ('bastion product delete')"
        )
        raise _refuse(
            session, who, now=now, action=action, target=f"device_group:{group.id}", why=why, code="default_group"
        )


def rename_group(session: Session, who: Principal, ref: str, new_name: str, *, now: dt.datetime) -> DeviceGroup:
    """Rename one of the caller's device groups (not a default one); commit.

    Its id, its TUF repository and its devices stay as they are.

    Raises:
        InvalidRequest: a bad name.
        NotFound: no such group in the caller's tenant.
        Conflict: a default group (``default_group``), or the product has a group of that name (``group_exists``).
    """
    group = get_group_for(session, who, ref, action="device_group.rename", now=now)
    name = parse_name(new_name, "device group")
    if name == group.name:
        return group
    _refuse_default(session, who, group, now=now, action="device_group.rename")
    exists = Conflict(f"the product already has a device group named {name!r}", code="group_exists")
    if name in _DEFAULT_NAMES or session.scalar(
        select(DeviceGroup.id).where(DeviceGroup.product_id == group.product_id, DeviceGroup.name == name)
    ):
        raise exists
    old, group.name, group.updated_at = group.name, name, now
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise exists from exc
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="device_group.rename",
        target=f"device_group:{group.id}",
        detail=f"name={old}->{name}",
    )
    session.commit()
    return group


def delete_group(session: Session, who: Principal, ref: str, *, now: dt.datetime) -> str:
    """Delete one of the caller's device groups that is not in use (and not a default one); commit; return its id.

    The caller removes its TUF repository (:func:`fleet.targets.remove_repositories`).

    The group's row is locked before the check (see the module docstring).

    Raises:
        NotFound: no such group in the caller's tenant.
        Conflict: a default group (``default_group``), in use (``group_in_use``, naming what uses it),
            or something started to use it during the delete (``changed_while_deleting``).
    """
    group = get_group_for(session, who, ref, action="device_group.delete", now=now)
    group_id, group_name, product_id = group.id, group.name, group.product_id
    target = f"device_group:{group_id}"
    _refuse_default(session, who, group, now=now, action="device_group.delete")
    repository.lock_for_delete(session, group_ids=[group_id])
    uses = group_uses(session, group_id)
    if uses:
        why = (
            f"device group {group_name!r} is in use: it has {', '.join(uses)}; "
            "move its devices to another group first ('bastion device assign')"
        )
        raise _refuse(session, who, now=now, action="device_group.delete", target=target, why=why, code="group_in_use")
    try:
        session.execute(delete(GroupAppraisalPolicy).where(GroupAppraisalPolicy.group_id == group_id))
        session.execute(delete(DeviceGroup).where(DeviceGroup.id == group_id))
        record(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="device_group.delete",
            target=target,
            detail=f"product={product_id} name={group_name}",
        )
        session.commit()
    except IntegrityError as exc:
        raise _changed(
            session, who, now=now, action="device_group.delete", target=target, what=f"device group {group_name!r}"
        ) from exc
    return group_id
