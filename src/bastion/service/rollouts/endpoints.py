"""HTTP endpoints: ``GET /rollouts/{id}``, ``POST /rollouts/{id}/resume`` and ``POST /rollouts/{id}/abort``.

A deployment's rollout is also under its deployment (``/deployments/{id}/resume|abort``,
:mod:`bastion.service.deployments.endpoints`); an OS promotion makes one rollout per group.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.orm import Session

from bastion.service.auth.deps import ContributorDep, ReaderDep
from bastion.service.fleet.targets import PublisherDep
from bastion.service.models import Rollout
from bastion.service.rollouts import service
from bastion.service.rollouts.health import HealthDep, HealthSource
from bastion.service.rollouts.schemas import RolloutOut, StageOut
from bastion.service.web import NowDep, SessionDep, SettingsDep

__all__ = ["rollout_out", "router"]

router = APIRouter(tags=["rollouts"])

RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def rollout_out(session: Session, rollout: Rollout, health: HealthSource, *, now: dt.datetime) -> RolloutOut:
    """The API form of a rollout, with progress and health per stage."""
    stages = [
        StageOut(
            index=s.index,
            percent=s.percent_bp / 100,
            percent_bp=s.percent_bp,
            devices=s.devices,
            installed=s.installed,
            current=s.index == rollout.stage,
            health=s.health,
        )
        for s in service.stage_reports(session, rollout, health, now=now)
    ]
    return RolloutOut(
        id=rollout.id,
        kind=rollout.kind,
        group_id=rollout.group_id,
        deployment_id=rollout.deployment_id,
        os_image_id=rollout.os_image_id,
        seed=rollout.seed,
        state=rollout.state,
        stage=rollout.stage,
        stages=stages,
        soak_seconds=rollout.soak_seconds,
        stage_started_at=rollout.stage_started_at,
        soak_started_at=rollout.soak_started_at,
        halt=dict(rollout.halt_rules),
        halt_reason=rollout.halt_reason,
        previous=list(rollout.previous),
        history=list(rollout.history),
        created_at=rollout.created_at,
        created_by=rollout.created_by,
        updated_at=rollout.updated_at,
    )


@router.get("/rollouts/{rollout_id}")
def show(rollout_id: RolloutId, who: ReaderDep, session: SessionDep, now: NowDep, health: HealthDep) -> RolloutOut:
    """A rollout: its stages with progress and health, its state, halt reason and history."""
    return rollout_out(session, service.get_rollout_for(session, who, rollout_id, now=now), health, now=now)


@router.post("/rollouts/{rollout_id}/resume")
def resume(
    rollout_id: RolloutId,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    health: HealthDep,
) -> RolloutOut:
    """Resume a halted rollout at its stage (no request body; audited)."""
    rollout = service.get_rollout_for(session, who, rollout_id, now=now)
    service.resume(session, who, rollout, now=now, settings=settings, publisher=pub)
    return rollout_out(session, rollout, health, now=now)


@router.post("/rollouts/{rollout_id}/abort")
def abort(
    rollout_id: RolloutId,
    who: ContributorDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    pub: PublisherDep,
    health: HealthDep,
) -> RolloutOut:
    """Abort a rollout: every device of the group is offered the previous release (no request body; audited)."""
    rollout = service.get_rollout_for(session, who, rollout_id, now=now)
    service.abort(session, who, rollout, now=now, settings=settings, publisher=pub)
    return rollout_out(session, rollout, health, now=now)
