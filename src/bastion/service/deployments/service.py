"""Creating deployments (which republishes the group) and reporting their per-device state.

A device's state in a deployment is derived from its last reported status:
``installed`` when it reports every image of the deployment installed;
otherwise ``rolled_back``, ``failed`` or ``deferred`` after a report of that
kind; otherwise ``pending`` (including devices that have not reported yet).
A revoked device is ``revoked`` whatever it reported: it gets no certificate
and so no update, and waiting for it would keep the deployment pending forever.
An unclaimed device has left the group (its row is gone) and is not counted.
A deployment is ``complete`` when every device it still counts (all but the
revoked) reports it installed (docs/adr/0024).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.service.appimages.service import find_images_for
from bastion.service.audit.service import record, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.config import Settings
from bastion.service.errors import InvalidRequest, NotFound
from bastion.service.fleet import repository
from bastion.service.fleet.limits import DEFAULT_FLEET_LIMITS, FleetLimits
from bastion.service.fleet.service import get_group_for
from bastion.service.fleet.targets import Publisher, republish
from bastion.service.models import AppImage, Deployment, DeploymentImage, Device, DeviceGroup, DeviceUpdateStatus
from bastion.service.rollouts import service as rollouts
from bastion.service.rollouts.rules import RolloutPlan

__all__ = [
    "DEPLOYMENT_STATES",
    "EXCLUDED_STATES",
    "ROLLOUT_ACTIONS",
    "DeploymentReport",
    "DeviceState",
    "change_rollout",
    "create_deployment",
    "deployment_report",
    "device_state",
    "get_deployment_for",
    "list_deployments",
]

#: Every state ``deployment show`` counts, in display order.
DEPLOYMENT_STATES = ("pending", "installed", "deferred", "failed", "rolled_back", "revoked")
#: States that leave a device out of the deployment: it can complete without them.
EXCLUDED_STATES = frozenset({"revoked"})
_FAILED_KINDS = frozenset({"update_failed", "update_refused", "app_failed"})
#: What an operator can do to a deployment's staged rollout (``POST /deployments/{id}/<action>``, the console).
ROLLOUT_ACTIONS = ("resume", "abort")


def create_deployment(
    session: Session,
    who: Principal,
    group_ref: str,
    image_refs: Sequence[str],
    *,
    settings: Settings,
    now: dt.datetime,
    publisher: Publisher,
    limits: FleetLimits = DEFAULT_FLEET_LIMITS,
    rollout: RolloutPlan | None = None,
) -> Deployment:
    """Deploy the caller's app images to one of its groups (it becomes current) and republish; commit.

    With ``rollout``, the deployment is staged (docs/adr/0017): its first stage is
    offered it, and the rest of the group keeps (or gets back) the previous release.

    Raises:
        InvalidRequest: no image, too many, or two images of one component.
        NotFound: the group or an image is not the caller's (or the group was deleted meanwhile).
    """
    if not image_refs or len(image_refs) > limits.max_deployment_images:
        raise InvalidRequest(
            f"a deployment has 1 to {limits.max_deployment_images} images; got {len(image_refs)}",
            code="invalid_deployment",
        )
    group = get_group_for(session, who, group_ref, action="deployment.create", now=now)
    images = find_images_for(session, who, image_refs, now=now)
    components = [i.component_id for i in images]
    if len(set(components)) != len(components):
        raise InvalidRequest(
            "a deployment holds at most one image of each app (component id)", code="duplicate_component"
        )
    previous = repository.current_deployment(session, group.id)
    deployment = Deployment(tenant_id=who.tenant_id, group_id=group.id, created_at=now, created_by=who.actor)
    session.add(deployment)
    group_id = group.id
    try:
        # From here the row's foreign key holds the group (its row lock, or SQLite's write lock) until commit.
        session.flush()
    except IntegrityError as exc:  # the group was deleted since it was looked up
        session.rollback()
        raise NotFound(f"device group {group_id!r} was deleted meanwhile; nothing was deployed") from exc
    session.add_all(DeploymentImage(deployment_id=deployment.id, image_id=i.id) for i in images)
    session.flush()
    rollouts.supersede(session, who, group.id, kind="deployment", now=now)
    staged = None
    if rollout is not None:
        staged = rollouts.create_for_deployment(
            session, who, deployment, images=images, previous_deployment=previous, plan=rollout, now=now
        )
    republish(session, settings, group, now=now, publisher=publisher, limits=limits)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="deployment.create",
        target=f"deployment:{deployment.id}",
        detail=f"group={group.id} images="
        + ",".join(f"{i.component_id}@{i.version}" for i in images)
        + ("" if staged is None else f" rollout={staged.id} stages={'/'.join(map(str, staged.stages))}bp"),
    )
    session.commit()
    return deployment


def list_deployments(session: Session, who: Principal, *, group_id: str | None, limit: int) -> Sequence[Deployment]:
    """The caller's deployments (of one group if given), newest first."""
    query = select(Deployment).where(Deployment.tenant_id == who.tenant_id)
    if group_id is not None:
        query = query.where(Deployment.group_id == group_id)
    return session.scalars(query.order_by(Deployment.id.desc()).limit(limit)).all()


def get_deployment_for(session: Session, who: Principal, deployment_id: int, *, now: dt.datetime) -> Deployment:
    """One of the caller's deployments.

    Raises:
        NotFound: no such deployment in the caller's tenant (another tenant's is audited as denied).
    """
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.tenant_id != who.tenant_id:
        # The same record and answer whether the deployment is missing or another tenant's.
        record_not_found(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="deployment.read",
            target=f"deployment:{deployment_id}",
        )
        raise NotFound(f"no deployment {deployment_id} in your tenant; list them with 'bastion deployment list'")
    return deployment


def change_rollout(
    session: Session,
    who: Principal,
    deployment_id: int,
    action: str,
    *,
    now: dt.datetime,
    settings: Settings,
    publisher: Publisher,
) -> Deployment:
    """Resume or abort the staged rollout of one of the caller's deployments; republish, audit, commit.

    The one path of the API (``/deployments/{id}/resume|abort``) and the console, so both
    check the same things and write the same audit record with the caller's actor.

    Raises:
        InvalidRequest: ``action`` is not one of :data:`ROLLOUT_ACTIONS`.
        NotFound: no such deployment in the caller's tenant, or it has no staged rollout.
        Conflict: the rollout's state does not allow it (``rollout_not_halted``, ``rollout_finished``),
            or another change won the race (``rollout_changed``).
    """
    if action not in ROLLOUT_ACTIONS:
        raise InvalidRequest(f"a rollout action is one of {', '.join(ROLLOUT_ACTIONS)}", code="invalid_action")
    deployment = get_deployment_for(session, who, deployment_id, now=now)
    staged = repository.deployment_rollout(session, deployment.id)
    if staged is None:
        raise NotFound(f"deployment {deployment.id} has no staged rollout (it was created without --stages)")
    change = rollouts.resume if action == "resume" else rollouts.abort
    change(session, who, staged, now=now, settings=settings, publisher=publisher)
    return deployment


def device_state(status: DeviceUpdateStatus | None, wanted: set[tuple[str, str]]) -> str:
    """A device's state for a deployment of the ``wanted`` (component id, version) pairs (revoked aside)."""
    if status is None:
        return "pending"
    installed = {(str(i.get("component_id")), str(i.get("version"))) for i in status.installed}
    if wanted <= installed:
        return "installed"
    if status.last_result == "os_rolled_back":
        return "rolled_back"
    if status.last_result in _FAILED_KINDS:
        return "failed"
    if status.last_result == "update_deferred":
        return "deferred"
    return "pending"


@dataclass(frozen=True)
class DeviceState:
    """One device's row in ``deployment show``."""

    device_id: str
    state: str
    os_version: str | None
    last_result: str | None
    last_result_at: dt.datetime | None
    reported_at: dt.datetime | None


@dataclass(frozen=True)
class DeploymentReport:
    """A deployment with its group, images, per-state counts and per-device rows."""

    deployment: Deployment
    group: DeviceGroup
    images: Sequence[AppImage]
    current: bool
    counts: dict[str, int]
    devices: list[DeviceState]

    @property
    def complete(self) -> bool:
        """Every device the deployment still counts (not revoked) reports it installed."""
        return all(n == 0 for state, n in self.counts.items() if state != "installed" and state not in EXCLUDED_STATES)


def deployment_report(session: Session, deployment: Deployment, *, max_devices: int) -> DeploymentReport:
    """Count the group's devices per state for ``deployment`` (rows for at most ``max_devices``)."""
    group = session.get(DeviceGroup, deployment.group_id)
    if group is None:  # pragma: no cover - foreign key
        raise NotFound("the deployment's device group no longer exists")
    images = repository.deployment_images(session, deployment.id)
    wanted = {(i.component_id, i.version) for i in images}
    current = repository.current_deployment(session, group.id)
    rows = session.execute(
        select(Device.device_id, Device.revoked_at, DeviceUpdateStatus)
        .outerjoin(DeviceUpdateStatus, DeviceUpdateStatus.device_id == Device.device_id)
        .where(Device.group_id == group.id, Device.tenant_id == deployment.tenant_id)
        .order_by(Device.device_id)
    ).all()
    counts = dict.fromkeys(DEPLOYMENT_STATES, 0)
    devices: list[DeviceState] = []
    for device_id, revoked_at, status in rows:
        state = "revoked" if revoked_at is not None else device_state(status, wanted)
        counts[state] += 1
        if len(devices) < max_devices:
            devices.append(
                DeviceState(
                    device_id=device_id,
                    state=state,
                    os_version=status.os_version if status else None,
                    last_result=status.last_result if status else None,
                    last_result_at=status.last_result_at if status else None,
                    reported_at=status.reported_at if status else None,
                )
            )
    return DeploymentReport(
        deployment=deployment,
        group=group,
        images=images,
        current=current is not None and current.id == deployment.id,
        counts=counts,
        devices=devices,
    )
