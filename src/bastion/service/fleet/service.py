"""Products, device groups and device assignment, scoped to the caller's tenant.

Another tenant's product, group or device is reported exactly like a missing
one (NotFound), and the attempt is audited as denied. Every change that alters
a group's targets republishes its TUF repository (:mod:`bastion.service.fleet.targets`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.service.audit.service import record, record_denied, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.config import Settings
from bastion.service.devices.service import get_device_for
from bastion.service.errors import Conflict, NotFound
from bastion.service.fleet import repository
from bastion.service.fleet.policy import DEFAULT_GROUPS, parse_feed, parse_name, parse_policy, parse_window
from bastion.service.fleet.targets import Publisher, republish
from bastion.service.models import Device, DeviceGroup, Product

__all__ = [
    "GroupChange",
    "assign_device",
    "create_group",
    "create_product",
    "get_group_for",
    "get_product_for",
    "list_groups",
    "list_products",
    "update_group",
]

_NO_GROUP_HINT = "list them with 'bastion device-group list'; name a group by its id or as 'PRODUCT/GROUP'"


def _not_found(session: Session, who: Principal, *, now: dt.datetime, action: str, target: str) -> None:
    record_not_found(session, now=now, tenant_id=who.tenant_id, actor=who.actor, action=action, target=target)


def _deny(session: Session, who: Principal, *, now: dt.datetime, action: str, target: str, detail: str) -> None:
    record_denied(
        session, now=now, tenant_id=who.tenant_id, actor=who.actor, action=action, target=target, detail=detail
    )


def get_product_for(session: Session, who: Principal, ref: str, *, action: str, now: dt.datetime) -> Product:
    """The caller's product by id or name.

    Raises:
        NotFound: no such product in the caller's tenant (another tenant's is audited as denied).
    """
    product = repository.find_product(session, who.tenant_id, ref)
    if product is None:
        # The same record whether the product is missing or another tenant's.
        _not_found(session, who, now=now, action=action, target=f"product:{ref}")
        raise NotFound(f"no product {ref[:100]!r} in your tenant; list them with 'bastion product list'")
    return product


def get_group_for(session: Session, who: Principal, ref: str, *, action: str, now: dt.datetime) -> DeviceGroup:
    """The caller's device group by id or ``"PRODUCT/GROUP"``.

    Raises:
        NotFound: no such group in the caller's tenant (another tenant's is audited as denied).
    """
    group = repository.find_group(session, who.tenant_id, ref)
    if group is None:
        # The same record whether the group is missing or another tenant's.
        _not_found(session, who, now=now, action=action, target=f"device_group:{ref}")
        raise NotFound(f"no device group {ref[:100]!r} in your tenant; {_NO_GROUP_HINT}")
    return group


def create_product(
    session: Session,
    who: Principal,
    name: str,
    description: str,
    *,
    settings: Settings,
    now: dt.datetime,
    publisher: Publisher,
) -> tuple[Product, list[DeviceGroup]]:
    """Create a product and its five default device groups (with their TUF repositories); commit.

    Raises:
        InvalidRequest: a bad name.
        Conflict: the tenant has a product of that name (``product_exists``).
    """
    name = parse_name(name, "product")
    exists = Conflict(f"your tenant already has a product named {name!r}", code="product_exists")
    if repository.find_product(session, who.tenant_id, name) is not None:
        raise exists
    product = Product(id=str(uuid.uuid4()), tenant_id=who.tenant_id, name=name, description=description, created_at=now)
    session.add(product)
    try:
        session.flush()  # before its groups: the unit of work orders rows only along relationships
    except IntegrityError as exc:  # a concurrent create of the same name
        session.rollback()
        raise exists from exc
    groups = [
        DeviceGroup(
            id=str(uuid.uuid4()),
            tenant_id=who.tenant_id,
            product_id=product.id,
            name=default.name,
            update_policy=default.policy.value,
            os_feed=default.feed.value,
            created_at=now,
            updated_at=now,
        )
        for default in DEFAULT_GROUPS
    ]
    session.add_all(groups)
    session.flush()
    for group in groups:
        republish(session, settings, group, now=now, publisher=publisher)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="product.create",
        target=f"product:{product.id}",
        detail=f"name={name}",
    )
    session.commit()
    return product, groups


def list_products(session: Session, who: Principal, *, limit: int) -> Sequence[Product]:
    """The caller's products."""
    return repository.list_products(session, who.tenant_id, limit=limit)


def list_groups(session: Session, who: Principal, *, product_id: str | None, limit: int) -> Sequence[DeviceGroup]:
    """The caller's device groups (of one product if given)."""
    return repository.list_groups(session, who.tenant_id, product_id=product_id, limit=limit)


def create_group(
    session: Session,
    who: Principal,
    product_ref: str,
    name: str,
    *,
    policy: str,
    feed: str,
    window_start: str | None,
    window_minutes: int | None,
    settings: Settings,
    now: dt.datetime,
    publisher: Publisher,
) -> DeviceGroup:
    """Create a device group in one of the caller's products (and its TUF repository); commit.

    Raises:
        InvalidRequest: bad name, policy, feed or window.
        NotFound: no such product in the caller's tenant.
        Conflict: the product has a group of that name (``group_exists``).
    """
    product = get_product_for(session, who, product_ref, action="device_group.create", now=now)
    name = parse_name(name, "device group")
    start, minutes = parse_window(window_start, window_minutes)
    group = DeviceGroup(
        id=str(uuid.uuid4()),
        tenant_id=who.tenant_id,
        product_id=product.id,
        name=name,
        update_policy=parse_policy(policy).value,
        os_feed=parse_feed(feed).value,
        window_start=start,
        window_minutes=minutes,
        created_at=now,
        updated_at=now,
    )
    exists = Conflict(f"product {product.name!r} already has a device group named {name!r}", code="group_exists")
    taken = session.scalar(select(DeviceGroup.id).where(DeviceGroup.product_id == product.id, DeviceGroup.name == name))
    if taken is not None:
        raise exists
    session.add(group)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise exists from exc
    republish(session, settings, group, now=now, publisher=publisher)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="device_group.create",
        target=f"device_group:{group.id}",
        detail=f"product={product.name} name={name} policy={group.update_policy} feed={group.os_feed}",
    )
    session.commit()
    return group


@dataclass(frozen=True)
class GroupChange:
    """A partial update of a device group; ``None`` fields stay as they are.

    ``set_window`` replaces the maintenance window with ``window_start`` /
    ``window_minutes`` (both ``None`` removes it: updates at any time).
    """

    update_policy: str | None = None
    os_feed: str | None = None
    set_window: bool = False
    window_start: str | None = None
    window_minutes: int | None = None


def update_group(
    session: Session,
    who: Principal,
    ref: str,
    change: GroupChange,
    *,
    settings: Settings,
    now: dt.datetime,
    publisher: Publisher,
) -> DeviceGroup:
    """Change a group's policy, feed or window; republish (targets and signed settings); commit.

    Every change republishes: the window and policy travel in the group's signed
    targets metadata, so running devices see them at their next check-in.

    Raises:
        InvalidRequest: bad policy, feed or window.
        NotFound: no such group in the caller's tenant.
    """
    group = get_group_for(session, who, ref, action="device_group.update", now=now)
    changes: list[str] = []
    if change.update_policy is not None:
        policy = parse_policy(change.update_policy).value
        if policy != group.update_policy:
            changes.append(f"policy={group.update_policy}->{policy}")
            group.update_policy = policy
    if change.os_feed is not None:
        feed = parse_feed(change.os_feed).value
        if feed != group.os_feed:
            changes.append(f"feed={group.os_feed}->{feed}")
            group.os_feed = feed
    if change.set_window:
        start, minutes = parse_window(change.window_start, change.window_minutes)
        if (start, minutes) != (group.window_start, group.window_minutes):
            changes.append(f"window={start or 'any'}+{minutes or 0}m")
            group.window_start, group.window_minutes = start, minutes
    if not changes:
        return group
    group.updated_at = now
    session.flush()
    republish(session, settings, group, now=now, publisher=publisher)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="device_group.update",
        target=f"device_group:{group.id}",
        detail=" ".join(changes),
    )
    session.commit()
    return group


def assign_device(
    session: Session, who: Principal, device_id: str, group_ref: str | None, *, now: dt.datetime
) -> tuple[Device, DeviceGroup | None]:
    """Put one of the caller's devices into one of its groups (``None``: out of any group); commit.

    The device picks the group up at its next attestation (the answer's ``updates``).
    A device in development mode stays in its product's Development group: the
    assignment names the group it returns to when it leaves development mode.

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: the device or the group is not in the caller's tenant (or the group was deleted meanwhile).
    """
    device = get_device_for(session, who, device_id, action="device.assign", now=now)
    group = None if group_ref is None else get_group_for(session, who, group_ref, action="device.assign", now=now)
    chosen = None if group is None else group.id
    detail = f"group={chosen or 'none'}"
    if device.development_mode:
        device.group_before_development = chosen
        detail += " (after development mode)"
        # That column has no foreign key: hold the group, so a delete under way cannot leave it dangling.
        session.flush()
        if chosen is not None and not repository.hold_group(session, chosen):
            session.rollback()
            raise NotFound(f"device group {chosen!r} was deleted meanwhile; {_NO_GROUP_HINT}")
    else:
        device.group_id = chosen
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="device.assign",
        target=f"device:{device_id}",
        detail=detail,
    )
    try:
        session.commit()
    except IntegrityError as exc:  # the group was deleted since it was looked up (its foreign key refused)
        session.rollback()
        raise NotFound(f"device group {chosen!r} was deleted meanwhile; {_NO_GROUP_HINT}") from exc
    return device, group
