"""HTTP endpoints: create, list and show deployments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from bastion.service.appimages.schemas import AppImageOut
from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.deployments import service
from bastion.service.deployments.schemas import DeploymentCreate, DeploymentDetail, DeploymentOut, DeviceStateOut
from bastion.service.fleet.limits import FleetLimitsDep
from bastion.service.fleet.service import get_group_for
from bastion.service.fleet.targets import PublisherDep
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["router"]

router = APIRouter(tags=["deployments"])


def _detail(report: service.DeploymentReport) -> DeploymentDetail:
    return DeploymentDetail(
        **DeploymentOut.model_validate(report.deployment).model_dump(),
        group_name=report.group.name,
        current=report.current,
        images=[AppImageOut.model_validate(i) for i in report.images],
        counts=report.counts,
        devices=[DeviceStateOut.model_validate(d) for d in report.devices],
    )


@router.post("/deployments", status_code=201)
def create(
    body: DeploymentCreate,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    limits: FleetLimitsDep,
) -> DeploymentDetail:
    deployment = service.create_deployment(
        session, who, body.group, body.images, settings=settings, now=now, publisher=pub, limits=limits
    )
    return _detail(service.deployment_report(session, deployment, max_devices=limits.deployment_device_rows))


@router.get("/deployments")
def list_deployments(
    who: ReaderDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    group: Annotated[str | None, Query(max_length=300)] = None,
) -> list[DeploymentOut]:
    group_id = None if group is None else get_group_for(session, who, group, action="deployment.read", now=now).id
    rows = service.list_deployments(session, who, group_id=group_id, limit=settings.limits.list_max_page_size)
    return [DeploymentOut.model_validate(d) for d in rows]


@router.get("/deployments/{deployment_id}")
def show(
    deployment_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    who: ReaderDep,
    session: SessionDep,
    now: NowDep,
    limits: FleetLimitsDep,
) -> DeploymentDetail:
    deployment = service.get_deployment_for(session, who, deployment_id, now=now)
    return _detail(service.deployment_report(session, deployment, max_devices=limits.deployment_device_rows))
