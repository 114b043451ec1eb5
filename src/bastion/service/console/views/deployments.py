"""Deployments: a paged list with each one's rollout state, and one deployment's staged progress.

The detail is what ``GET /deployments/{id}`` answers (the same domain functions:
:func:`bastion.service.deployments.service.deployment_report` and
:func:`bastion.service.rollouts.service.stage_reports`), shaped for the page and
its live fragment: per stage its share, devices, installs and health, the halt
reason, the history, and which operator actions the state allows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.deployments.service import DeploymentReport, DeviceState
from bastion.service.fleet import repository as fleet_repository
from bastion.service.models import AppImage, Deployment, DeviceGroup, Product, Rollout
from bastion.service.rollouts import service as rollouts
from bastion.service.rollouts.health import HealthSource
from bastion.service.rollouts.rules import LIVE_STATES, RolloutState

__all__ = [
    "DeploymentRow",
    "DeploymentView",
    "DeploymentsPage",
    "ImageChoice",
    "ImageChoices",
    "RolloutView",
    "StageView",
    "deployment_view",
    "deployments_page",
    "image_choices",
    "rollout_view",
]

#: Most app images the deployment form offers: the newest (older ones are deployed by id with the CLI or API).
MAX_IMAGE_CHOICES = 200


@dataclass(frozen=True)
class DeploymentRow:
    """One deployment in the list."""

    id: int
    group_id: str
    group_name: str
    created_at: dt.datetime
    created_by: str
    rollout_state: str | None  # None: not staged
    stage: int | None
    stages: int | None
    percent: float | None


@dataclass(frozen=True)
class DeploymentsPage:
    """A page of deployments, newest first."""

    rows: Sequence[DeploymentRow]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class StageView:
    """One stage: its share of the group, devices in it, installed, its health per release."""

    index: int
    percent: float
    devices: int
    installed: int
    current: bool
    passed: bool
    health: Sequence[dict[str, object]]


@dataclass(frozen=True)
class RolloutView:
    """A staged rollout's state for the page."""

    id: int
    state: str
    stage: int
    stages: Sequence[StageView]
    halt_reason: str | None
    halt_rules: dict[str, object]
    soak_seconds: int
    soak_started_at: dt.datetime | None
    history: Sequence[dict[str, object]]
    can_resume: bool
    can_abort: bool
    live: bool


@dataclass(frozen=True)
class DeploymentView:
    """One deployment: images, per-state counts, device rows and its rollout."""

    id: int
    group_id: str
    group_name: str
    created_at: dt.datetime
    created_by: str
    current: bool
    images: Sequence[tuple[str, str]]
    counts: dict[str, int]
    devices: Sequence[DeviceState]
    rollout: RolloutView | None

    @property
    def finished(self) -> bool:
        """Nothing more will change by itself (the live refresh can stop)."""
        return self.rollout is None or not self.rollout.live


@dataclass(frozen=True)
class ImageChoice:
    """One app image the deployment form offers."""

    id: int
    component_id: str
    version: str
    uploaded_at: dt.datetime

    @property
    def label(self) -> str:
        """How the form's select names it: id, app (component id) and version."""
        return f"#{self.id} · {self.component_id} @ {self.version}"


@dataclass(frozen=True)
class ImageChoices:
    """The images the form offers, newest first; ``more``: the tenant has older ones not offered."""

    images: Sequence[ImageChoice]
    more: bool
    limit: int


def image_choices(session: Session, tenant_id: str, *, limit: int | None = None) -> ImageChoices:
    """The tenant's newest ``limit`` (default :data:`MAX_IMAGE_CHOICES`) app images, for the form's select."""
    limit = MAX_IMAGE_CHOICES if limit is None else limit
    rows = session.execute(
        select(AppImage.id, AppImage.component_id, AppImage.version, AppImage.uploaded_at)
        .where(AppImage.tenant_id == tenant_id)
        .order_by(AppImage.uploaded_at.desc(), AppImage.id.desc())
        .limit(limit + 1)
    ).all()
    images = [ImageChoice(id=r[0], component_id=r[1], version=r[2], uploaded_at=r[3]) for r in rows[:limit]]
    return ImageChoices(images=images, more=len(rows) > limit, limit=limit)


def _group_name(name: str, product: str) -> str:
    return f"{product}/{name}"


def deployments_page(
    session: Session, tenant_id: str, *, offset: int, limit: int, group_id: str | None = None
) -> DeploymentsPage:
    """A page of the tenant's deployments (of one group if given), newest first, with their rollouts."""
    where = [Deployment.tenant_id == tenant_id]
    if group_id is not None:
        where.append(Deployment.group_id == group_id)
    total = session.scalar(select(func.count()).select_from(Deployment).where(*where)) or 0
    rows = session.execute(
        select(Deployment, DeviceGroup.name, Product.name, Rollout)
        .join(DeviceGroup, DeviceGroup.id == Deployment.group_id)
        .join(Product, Product.id == DeviceGroup.product_id)
        .outerjoin(Rollout, Rollout.deployment_id == Deployment.id)
        .where(*where)
        .order_by(Deployment.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return DeploymentsPage(
        rows=[
            DeploymentRow(
                id=d.id,
                group_id=d.group_id,
                group_name=_group_name(gname, pname),
                created_at=d.created_at,
                created_by=d.created_by,
                rollout_state=None if r is None else r.state,
                stage=None if r is None else r.stage + 1,
                stages=None if r is None else len(r.stages),
                percent=None if r is None else int(r.stages[r.stage]) / 100,
            )
            for d, gname, pname, r in rows
        ],
        total=total,
        offset=offset,
        limit=limit,
    )


def rollout_view(session: Session, rollout: Rollout, health: HealthSource, *, now: dt.datetime) -> RolloutView:
    """A rollout with its stages' progress and health."""
    done = rollout.state == RolloutState.COMPLETED.value
    stages = [
        StageView(
            index=s.index,
            percent=s.percent_bp / 100,
            devices=s.devices,
            installed=s.installed,
            current=s.index == rollout.stage,
            passed=done or s.index < rollout.stage,
            health=s.health,
        )
        for s in rollouts.stage_reports(session, rollout, health, now=now)
    ]
    finished = rollout.state in (RolloutState.COMPLETED.value, RolloutState.ABORTED.value)
    return RolloutView(
        id=rollout.id,
        state=rollout.state,
        stage=rollout.stage,
        stages=stages,
        halt_reason=rollout.halt_reason,
        halt_rules=dict(rollout.halt_rules),
        soak_seconds=rollout.soak_seconds,
        soak_started_at=rollout.soak_started_at,
        history=list(reversed(rollout.history)),
        can_resume=rollout.state == RolloutState.HALTED.value,
        can_abort=not finished,
        live=rollout.state in LIVE_STATES,
    )


def deployment_view(
    session: Session, report: DeploymentReport, health: HealthSource, *, now: dt.datetime
) -> DeploymentView:
    """The page of one deployment from its report (``deployment_report``)."""
    deployment = report.deployment
    product = session.get(Product, report.group.product_id)
    staged = fleet_repository.deployment_rollout(session, deployment.id)
    return DeploymentView(
        id=deployment.id,
        group_id=report.group.id,
        group_name=_group_name(report.group.name, product.name if product else "?"),
        created_at=deployment.created_at,
        created_by=deployment.created_by,
        current=report.current,
        images=[(i.component_id, i.version) for i in report.images],
        counts=report.counts,
        devices=report.devices,
        rollout=None if staged is None else rollout_view(session, staged, health, now=now),
    )
