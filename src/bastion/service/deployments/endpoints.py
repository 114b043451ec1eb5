"""HTTP endpoints: create, list and show deployments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from bastion.service.appimages.schemas import AppImageOut
from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.auth.service import Principal
from bastion.service.config import Settings
from bastion.service.deployments import service
from bastion.service.deployments.schemas import DeploymentCreate, DeploymentDetail, DeploymentOut, DeviceStateOut
from bastion.service.fleet import repository
from bastion.service.fleet.limits import FleetLimits, FleetLimitsDep
from bastion.service.fleet.service import get_group_for
from bastion.service.fleet.targets import Publisher, PublisherDep
from bastion.service.rollouts.endpoints import rollout_out
from bastion.service.rollouts.health import HealthDep, HealthSource
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["router"]

router = APIRouter(tags=["deployments"])


DeploymentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _detail(
    report: service.DeploymentReport, session: Session, health: HealthSource, *, now: dt.datetime
) -> DeploymentDetail:
    staged = repository.deployment_rollout(session, report.deployment.id)
    return DeploymentDetail(
        **DeploymentOut.model_validate(report.deployment).model_dump(),
        group_name=report.group.name,
        current=report.current,
        images=[AppImageOut.model_validate(i) for i in report.images],
        counts=report.counts,
        complete=report.complete,
        devices=[DeviceStateOut.model_validate(d) for d in report.devices],
        rollout=None if staged is None else rollout_out(session, staged, health, now=now),
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
    health: HealthDep,
) -> DeploymentDetail:
    plan = None if body.rollout is None else body.rollout.plan()
    deployment = service.create_deployment(
        session, who, body.group, body.images, settings=settings, now=now, publisher=pub, limits=limits, rollout=plan
    )
    report = service.deployment_report(session, deployment, max_devices=limits.deployment_device_rows)
    return _detail(report, session, health, now=now)


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
    deployment_id: DeploymentId,
    who: ReaderDep,
    *,
    session: SessionDep,
    now: NowDep,
    limits: FleetLimitsDep,
    health: HealthDep,
) -> DeploymentDetail:
    """A deployment: its images, its devices per state, and its staged rollout (stages, progress, health)."""
    deployment = service.get_deployment_for(session, who, deployment_id, now=now)
    report = service.deployment_report(session, deployment, max_devices=limits.deployment_device_rows)
    return _detail(report, session, health, now=now)


def _change(
    deployment_id: int,
    action: str,
    who: Principal,
    *,
    session: Session,
    settings: Settings,
    now: dt.datetime,
    pub: Publisher,
    limits: FleetLimits,
    health: HealthSource,
) -> DeploymentDetail:
    deployment = service.change_rollout(session, who, deployment_id, action, now=now, settings=settings, publisher=pub)
    report = service.deployment_report(session, deployment, max_devices=limits.deployment_device_rows)
    return _detail(report, session, health, now=now)


@router.post("/deployments/{deployment_id}/resume")
def resume(
    deployment_id: DeploymentId,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    limits: FleetLimitsDep,
    health: HealthDep,
) -> DeploymentDetail:
    """Resume the deployment's halted rollout at the stage it halted in (no request body; audited)."""
    return _change(
        deployment_id, "resume", who, session=session, settings=settings, now=now, pub=pub, limits=limits, health=health
    )


@router.post("/deployments/{deployment_id}/abort")
def abort(
    deployment_id: DeploymentId,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    limits: FleetLimitsDep,
    health: HealthDep,
) -> DeploymentDetail:
    """Abort the deployment's rollout: every device of the group is offered the previous release (audited)."""
    return _change(
        deployment_id, "abort", who, session=session, settings=settings, now=now, pub=pub, limits=limits, health=health
    )
