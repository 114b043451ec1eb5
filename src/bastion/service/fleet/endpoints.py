"""HTTP endpoints: products, device groups and device assignment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.devices.schemas import DeviceOut
from bastion.service.fleet import blocklist, lifecycle, service, targets
from bastion.service.fleet.schemas import (
    AssignRequest,
    BlocklistClearCreate,
    BlocklistClearOut,
    GroupCreate,
    GroupOut,
    GroupUpdate,
    ProductCreate,
    ProductDetail,
    ProductOut,
    ProductUpdate,
)
from bastion.service.fleet.targets import PublisherDep
from bastion.service.web import NowDep, SessionDep, SettingsDep

router = APIRouter(tags=["fleet"])

#: Bound on one page of blocklist clears.
MAX_CLEARS_PAGE = 100


@router.post("/products", status_code=201)
def create_product(
    body: ProductCreate,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
) -> ProductDetail:
    product, groups = service.create_product(
        session, who, body.name, body.description, settings=settings, now=now, publisher=pub
    )
    return ProductDetail(**ProductOut.model_validate(product).model_dump(), groups=[GroupOut.of(g) for g in groups])


@router.get("/products")
def list_products(who: ReaderDep, session: SessionDep, settings: SettingsDep) -> list[ProductOut]:
    bound = settings.limits.list_max_page_size
    return [ProductOut.model_validate(p) for p in service.list_products(session, who, limit=bound)]


@router.get("/products/{ref}")
def show_product(ref: str, who: ReaderDep, session: SessionDep, settings: SettingsDep, now: NowDep) -> ProductDetail:
    product = service.get_product_for(session, who, ref, action="product.read", now=now)
    groups = service.list_groups(session, who, product_id=product.id, limit=settings.limits.list_max_page_size)
    return ProductDetail(**ProductOut.model_validate(product).model_dump(), groups=[GroupOut.of(g) for g in groups])


@router.patch("/products/{ref}")
def rename_product(
    ref: str, body: ProductUpdate, who: ContributorDep, *, session: SessionDep, settings: SettingsDep, now: NowDep
) -> ProductDetail:
    """Rename a product (409 ``product_exists`` when the name is taken)."""
    product = lifecycle.rename_product(session, who, ref, body.name, now=now)
    groups = service.list_groups(session, who, product_id=product.id, limit=settings.limits.list_max_page_size)
    return ProductDetail(**ProductOut.model_validate(product).model_dump(), groups=[GroupOut.of(g) for g in groups])


@router.delete("/products/{ref}", status_code=204)
def delete_product(ref: str, who: ContributorDep, session: SessionDep, settings: SettingsDep, now: NowDep) -> Response:
    """Delete a product and its default groups; 409 while it has other groups or a group is in use."""
    targets.remove_repositories(settings, lifecycle.delete_product(session, who, ref, now=now))
    return Response(status_code=204)


@router.post("/device-groups", status_code=201)
def create_group(
    body: GroupCreate,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
) -> GroupOut:
    window = body.maintenance_window
    group = service.create_group(
        session,
        who,
        body.product,
        body.name,
        policy=body.update_policy,
        feed=body.os_feed,
        window_start=window.start if window else None,
        window_minutes=window.duration_minutes if window else None,
        settings=settings,
        now=now,
        publisher=pub,
    )
    return GroupOut.of(group)


@router.get("/device-groups")
def list_groups(
    who: ReaderDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    product: Annotated[str | None, Query(max_length=200)] = None,
) -> list[GroupOut]:
    product_id = (
        None if product is None else service.get_product_for(session, who, product, action="product.read", now=now).id
    )
    groups = service.list_groups(session, who, product_id=product_id, limit=settings.limits.list_max_page_size)
    return [GroupOut.of(g) for g in groups]


@router.get("/device-groups/{ref:path}")
def show_group(ref: str, who: ReaderDep, session: SessionDep, now: NowDep) -> GroupOut:
    return GroupOut.of(service.get_group_for(session, who, ref, action="device_group.read", now=now))


@router.patch("/device-groups/{ref:path}")
def update_group(
    ref: str,
    body: GroupUpdate,
    *,
    who: ContributorDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
) -> GroupOut:
    window = body.maintenance_window
    change = service.GroupChange(
        update_policy=body.update_policy,
        os_feed=body.os_feed,
        set_window="maintenance_window" in body.model_fields_set,
        window_start=window.start if window else None,
        window_minutes=window.duration_minutes if window else None,
    )
    if body.name is not None:
        ref = lifecycle.rename_group(session, who, ref, body.name, now=now).id
    group = service.update_group(session, who, ref, change, settings=settings, now=now, publisher=pub)
    return GroupOut.of(group)


@router.delete("/device-groups/{ref:path}", status_code=204)
def delete_group(ref: str, who: ContributorDep, session: SessionDep, settings: SettingsDep, now: NowDep) -> Response:
    """Delete a device group; 409 while it is in use (devices, deployments, rollouts) or a default group."""
    targets.remove_repositories(settings, [lifecycle.delete_group(session, who, ref, now=now)])
    return Response(status_code=204)


@router.post("/devices/{device_id}/group")
def assign(device_id: str, body: AssignRequest, who: ContributorDep, session: SessionDep, now: NowDep) -> DeviceOut:
    device, _group = service.assign_device(session, who, device_id, body.group, now=now)
    return DeviceOut.model_validate(device)


@router.post("/os-blocklist-clears", status_code=201)
def clear_os_blocklist(
    body: BlocklistClearCreate,
    *,
    who: ContributorDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
) -> BlocklistClearOut:
    """Clear a device-side blocklisted OS image for the group or one device (signed into its targets)."""
    clear = blocklist.clear_os_blocklist(
        session, who, body.group, body.image, device_id=body.device_id, settings=settings, now=now, publisher=pub
    )
    return BlocklistClearOut.of(clear)


@router.get("/os-blocklist-clears")
def list_os_blocklist_clears(
    group: Annotated[str, Query(max_length=200)],
    who: ReaderDep,
    session: SessionDep,
    now: NowDep,
    limit: Annotated[int, Query(ge=1, le=MAX_CLEARS_PAGE)] = MAX_CLEARS_PAGE,
) -> list[BlocklistClearOut]:
    """The group's blocklist clears, newest first."""
    return [BlocklistClearOut.of(c) for c in blocklist.list_blocklist_clears(session, who, group, now=now, limit=limit)]
