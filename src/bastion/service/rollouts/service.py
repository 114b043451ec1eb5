"""Staged rollouts: create one with a deployment or an OS promotion, evaluate it (the gate), resume, abort, report.

A rollout offers its release to the devices of its current stage (a fixed,
deterministic share of the group: :mod:`bastion.images.rollout`). :func:`evaluate`
is the gate: a stage soaks for ``soak_seconds`` from the first install among the
devices it added; a
halt rule that fires (with its minimum sample) halts it by itself, and every
device is offered the previous release again; when the soak passes with no rule
firing, the rollout moves to the next stage, and the last stage completes it.
Every change is a compare-and-set on the row's ``version``, so two workers
evaluating at once change it once. Every change republishes the group's TUF
targets (:func:`bastion.service.fleet.targets.republish`) and is audited.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from bastion.images.rollout import in_stage
from bastion.service import metrics
from bastion.service.audit.service import record, record_not_found
from bastion.service.auth.service import Principal
from bastion.service.config import Settings
from bastion.service.errors import Conflict, NotFound
from bastion.service.fleet import repository as fleet_repository
from bastion.service.fleet.targets import Publisher, offered_bp, republish
from bastion.service.models import (
    AppImage,
    Deployment,
    Device,
    DeviceGroup,
    DeviceUpdateEvent,
    DeviceUpdateStatus,
    OsImage,
    Rollout,
)
from bastion.service.rollouts.health import HealthSource
from bastion.service.rollouts.rules import LIVE_STATES, HaltRules, RolloutPlan, RolloutState

__all__ = [
    "BASELINE_WINDOW",
    "GATE_ACTOR",
    "MAX_GROUP_DEVICES",
    "MAX_HISTORY",
    "Outcome",
    "Release",
    "StageReport",
    "abort",
    "create_for_deployment",
    "create_for_os",
    "evaluate",
    "get_rollout_for",
    "releases",
    "resume",
    "stage_members",
    "stage_reports",
    "supersede",
]

#: The actor of the gate's own changes in the audit log and the history.
GATE_ACTOR = "service:rollout-gate"
#: Bound on the history entries kept per rollout (the oldest go first).
MAX_HISTORY = 64
#: Bound on the devices of a group the gate hashes into stages per evaluation.
MAX_GROUP_DEVICES = 100_000
#: The window over which the previous release's crash-free rate on the group is the baseline.
BASELINE_WINDOW = dt.timedelta(hours=24)
#: Update events that count as a failed install of the release.
INSTALL_FAILURE_KINDS = ("update_failed", "update_refused")
#: For an OS release, a rollback of the trial boot is a failed install too.
OS_INSTALL_FAILURE_KINDS = (*INSTALL_FAILURE_KINDS, "os_rolled_back")


@dataclass(frozen=True)
class Release:
    """One component a rollout ships: ``component_id`` ``""`` is the OS (the health contract's convention)."""

    component_id: str
    version: str
    previous_version: str | None


@dataclass(frozen=True)
class Outcome:
    """What one evaluation did: ``none``, ``soaking``, ``advanced``, ``halted``, ``completed`` or ``lost``
    (another worker changed the rollout first)."""

    action: str
    reason: str = ""


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def _history(rollout: Rollout, *, now: dt.datetime, event: str, by: str, reason: str = "") -> None:
    entry: dict[str, object] = {
        "at": _iso(now),
        "event": event,
        "stage": rollout.stage,
        "percent_bp": int(rollout.stages[rollout.stage]),
        "state": rollout.state,
        "by": by,
    }
    if reason:
        entry["reason"] = reason[:500]
    rollout.history = [*rollout.history, entry][-MAX_HISTORY:]  # a new list: JSON columns track assignment


def _new(
    *,
    tenant_id: str,
    group_id: str,
    kind: str,
    plan: RolloutPlan,
    previous: list[dict[str, object]],
    who: Principal,
    now: dt.datetime,
    deployment_id: int | None = None,
    os_image_id: int | None = None,
) -> Rollout:
    rollout = Rollout(
        tenant_id=tenant_id,
        group_id=group_id,
        kind=kind,
        deployment_id=deployment_id,
        os_image_id=os_image_id,
        seed=secrets.token_hex(16),
        stages=list(plan.stages_bp),
        stage=0,
        state=RolloutState.RUNNING.value,
        stage_started_at=now,
        soak_started_at=None,
        soak_seconds=plan.soak_seconds,
        halt_rules=plan.halt.to_json(),
        halt_reason=None,
        previous=previous,
        history=[],
        created_at=now,
        created_by=who.actor,
        updated_at=now,
    )
    _history(rollout, now=now, event="created", by=who.actor)
    return rollout


def supersede(session: Session, who: Principal, group_id: str, *, kind: str, now: dt.datetime) -> list[int]:
    """End the group's unfinished rollouts of ``kind`` that a new deployment or promotion replaces.

    They become ``aborted`` (history event ``superseded``), so the gate stops
    evaluating a release the group no longer offers. Returns their ids.
    """
    ended = session.scalars(
        select(Rollout).where(
            Rollout.group_id == group_id,
            Rollout.kind == kind,
            Rollout.state.in_([*LIVE_STATES, RolloutState.HALTED.value]),
        )
    ).all()
    for rollout in ended:
        rollout.state, rollout.updated_at = RolloutState.ABORTED.value, now
        _history(rollout, now=now, event="superseded", by=who.actor)
    session.flush()
    return [r.id for r in ended]


def create_for_deployment(
    session: Session,
    who: Principal,
    deployment: Deployment,
    *,
    images: Sequence[AppImage],
    previous_deployment: Deployment | None,
    plan: RolloutPlan,
    now: dt.datetime,
) -> Rollout:
    """Attach a staged rollout to a new deployment (before the group is republished; the caller commits).

    The previous release is the group's deployment before this one: per component of
    the new deployment, its image there (if it differs) is the fallback.
    """
    previous: list[dict[str, object]] = []
    if previous_deployment is not None:
        new = {i.component_id: i.version for i in images}
        for image in fleet_repository.deployment_images(session, previous_deployment.id):
            if image.component_id in new and new[image.component_id] != image.version:
                previous.append({"image_id": image.id, "component_id": image.component_id, "version": image.version})
    rollout = _new(
        tenant_id=who.tenant_id,
        group_id=deployment.group_id,
        kind="deployment",
        plan=plan,
        previous=previous,
        who=who,
        now=now,
        deployment_id=deployment.id,
    )
    session.add(rollout)
    session.flush()
    return rollout


def create_for_os(
    session: Session,
    who: Principal,
    image: OsImage,
    *,
    groups: Sequence[DeviceGroup],
    previous_image: OsImage | None,
    plan: RolloutPlan,
    now: dt.datetime,
) -> list[Rollout]:
    """One staged rollout per group an OS promotion reaches (before they are republished; the caller commits)."""
    previous: list[dict[str, object]] = (
        []
        if previous_image is None
        else [{"os_image_id": previous_image.id, "component_id": "", "version": previous_image.version}]
    )
    rollouts = [
        _new(
            tenant_id=who.tenant_id,
            group_id=group.id,
            kind="os",
            plan=plan,
            previous=previous,
            who=who,
            now=now,
            os_image_id=image.id,
        )
        for group in groups
    ]
    session.add_all(rollouts)
    session.flush()
    return rollouts


def get_rollout_for(session: Session, who: Principal, rollout_id: int, *, now: dt.datetime) -> Rollout:
    """One of the caller's rollouts.

    Raises:
        NotFound: no such rollout in the caller's tenant (audited the same whether missing or another tenant's).
    """
    rollout = session.get(Rollout, rollout_id)
    if rollout is None or rollout.tenant_id != who.tenant_id:
        record_not_found(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="rollout.read",
            target=f"rollout:{rollout_id}",
        )
        raise NotFound(f"no rollout {rollout_id} in your tenant")
    return rollout


def releases(session: Session, rollout: Rollout) -> list[Release]:
    """The components the rollout ships, with the version each replaces."""
    before = {str(p.get("component_id")): str(p.get("version")) for p in rollout.previous}
    if rollout.kind == "os":
        image = session.get(OsImage, rollout.os_image_id)
        return [] if image is None else [Release("", image.version, before.get(""))]
    if rollout.deployment_id is None:  # pragma: no cover - a deployment rollout has one
        return []
    return [
        Release(i.component_id, i.version, before.get(i.component_id))
        for i in fleet_repository.deployment_images(session, rollout.deployment_id)
    ]


def stage_members(session: Session, rollout: Rollout, percent_bp: int) -> list[str]:
    """The group's devices in a stage of ``percent_bp`` (the same set the devices compute).

    Revoked devices are left out: they get no certificate and so no update, and a
    stage whose only new devices were revoked would otherwise never start its soak.
    Membership is a hash of each device ID, so leaving some out moves no one else.
    """
    ids = session.scalars(
        select(Device.device_id)
        .where(
            Device.group_id == rollout.group_id,
            Device.tenant_id == rollout.tenant_id,
            Device.revoked_at.is_(None),
        )
        .order_by(Device.device_id)
        .limit(MAX_GROUP_DEVICES)
    ).all()
    return [d for d in ids if in_stage(d, rollout.seed, percent_bp=percent_bp)]


def _installed(session: Session, rollout: Rollout, members: Sequence[str], shipped: Sequence[Release]) -> int:
    """How many of ``members`` report every release of the rollout installed."""
    if not members or not shipped:
        return 0
    rows = session.execute(
        select(DeviceUpdateStatus.os_version, DeviceUpdateStatus.installed).where(
            DeviceUpdateStatus.device_id.in_(members)
        )
    ).all()
    count = 0
    for os_version, apps in rows:
        have = {(str(a.get("component_id")), str(a.get("version"))) for a in apps}
        have.add(("", str(os_version)))
        if all((r.component_id, r.version) in have for r in shipped):
            count += 1
    return count


def _install_failures(
    session: Session, rollout: Rollout, members: Sequence[str], release: Release, *, since: dt.datetime
) -> int:
    """Devices of ``members`` that failed or refused the release's install since ``since``."""
    if not members:
        return 0
    kinds = OS_INSTALL_FAILURE_KINDS if rollout.kind == "os" else INSTALL_FAILURE_KINDS
    query = select(func.count(distinct(DeviceUpdateEvent.device_id))).where(
        DeviceUpdateEvent.tenant_id == rollout.tenant_id,
        DeviceUpdateEvent.device_id.in_(members),
        DeviceUpdateEvent.kind.in_(kinds),
        DeviceUpdateEvent.version == release.version,
        DeviceUpdateEvent.at >= since,
    )
    if rollout.kind != "os":
        query = query.where(DeviceUpdateEvent.component_id == release.component_id)
    return int(session.scalar(query) or 0)


def _halt_reason(
    session: Session,
    rollout: Rollout,
    members: Sequence[str],
    health: HealthSource,
    *,
    now: dt.datetime,
) -> str | None:
    """The first rule that fires for the current stage, as a sentence; ``None`` when none does."""
    rules = HaltRules.from_json(rollout.halt_rules)
    since = rollout.stage_started_at
    for release in releases(session, rollout):
        name = f"OS {release.version}" if release.component_id == "" else f"{release.component_id}@{release.version}"
        seen = health.release_health(
            session,
            rollout.tenant_id,
            component_id=release.component_id,
            version=release.version,
            since=since,
            until=now,
            group_id=rollout.group_id,
            device_ids=members,
        )
        sampled = seen.devices >= rules.min_sample
        if rules.crash_drop_points is not None and sampled and seen.crash_free_rate is not None:
            baseline_rate = 1.0  # no (or too small a) baseline: measured against a crash-free previous release
            if release.previous_version is not None:
                base = health.release_health(
                    session,
                    rollout.tenant_id,
                    component_id=release.component_id,
                    version=release.previous_version,
                    since=now - BASELINE_WINDOW,
                    until=now,
                    group_id=rollout.group_id,
                )
                if base.devices >= rules.min_sample and base.crash_free_rate is not None:
                    baseline_rate = base.crash_free_rate
            drop = (baseline_rate - seen.crash_free_rate) * 100
            if drop > rules.crash_drop_points:
                return (
                    f"crash_drop: {name} is {seen.crash_free_rate * 100:.1f}% crash-free on {seen.devices} devices "
                    f"against {baseline_rate * 100:.1f}% for the previous release "
                    f"(a drop of {drop:.1f} points > {rules.crash_drop_points:g})"
                )
        if rules.new_bucket and sampled:
            buckets = health.new_buckets(  # the stage's own devices: no other device can halt the rollout
                session,
                rollout.tenant_id,
                component_id=release.component_id,
                version=release.version,
                since=since,
                device_ids=members,
            )
            if buckets:
                shown = ", ".join(buckets[:5])
                return f"new_bucket: {len(buckets)} new crash bucket(s) in {name} ({shown}) on {seen.devices} devices"
        if rules.install_failures is not None:
            failed = _install_failures(session, rollout, members, release, since=since)
            tried = failed + _installed(session, rollout, members, [release])
            if tried >= rules.min_sample and failed > rules.install_failures:
                limit = rules.install_failures
                return f"install_failures: {failed} of {tried} devices failed to install {name} (> {limit})"
    return None


def _group(session: Session, rollout: Rollout) -> DeviceGroup:
    group = session.get(DeviceGroup, rollout.group_id)
    if group is None:  # pragma: no cover - foreign key
        raise NotFound("the rollout's device group no longer exists")
    return group


def _audit(session: Session, rollout: Rollout, *, now: dt.datetime, actor: str, action: str, detail: str) -> None:
    record(
        session,
        now=now,
        tenant_id=rollout.tenant_id,
        actor=actor,
        action=action,
        target=f"rollout:{rollout.id}",
        detail=(
            f"{rollout.kind} deployment={rollout.deployment_id} os_image={rollout.os_image_id} "
            f"stage={rollout.stage + 1}/{len(rollout.stages)} {detail}"
        )[:1000],
    )


#: The audit action of each change the gate makes.
_GATE_ACTIONS = {"halted": "rollout.halt", "advanced": "rollout.advance", "completed": "rollout.complete"}


def _commit(session: Session) -> bool:
    """Commit; False when another worker changed the rollout first (the compare-and-set on ``version`` lost)."""
    try:
        session.commit()
    except StaleDataError:
        session.rollback()
        return False
    return True


def _flush(session: Session) -> bool:
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        return False
    return True


def evaluate(  # noqa: PLR0911 - one return per outcome of the gate reads best
    session: Session,
    rollout: Rollout,
    *,
    now: dt.datetime,
    settings: Settings,
    publisher: Publisher,
    health: HealthSource,
) -> Outcome:
    """The gate for one rollout at ``now``: halt, start the soak, advance, complete, or nothing; commit.

    A rollout that is not ``running`` or ``soaking`` is left alone.
    """
    if rollout.state not in LIVE_STATES:
        return Outcome("none")
    members = stage_members(session, rollout, int(rollout.stages[rollout.stage]))
    reason = _halt_reason(session, rollout, members, health, now=now)
    if reason is not None:
        rollout.state, rollout.halt_reason, rollout.updated_at = RolloutState.HALTED.value, reason, now
        _history(rollout, now=now, event="halted", by=GATE_ACTOR, reason=reason)
        return _changed(
            session, rollout, settings=settings, publisher=publisher, now=now, outcome=Outcome("halted", reason)
        )
    if rollout.state == RolloutState.RUNNING.value:
        # The soak starts with the first install among the devices this stage added
        # (the earlier stages' devices have the release already).
        before = (
            set(stage_members(session, rollout, int(rollout.stages[rollout.stage - 1]))) if rollout.stage else set()
        )
        added = [d for d in members if d not in before]
        if added and _installed(session, rollout, added, releases(session, rollout)) == 0:
            return Outcome("none")
        rollout.state, rollout.soak_started_at, rollout.updated_at = RolloutState.SOAKING.value, now, now
        _history(rollout, now=now, event="soaking", by=GATE_ACTOR)
        return Outcome("soaking") if _commit(session) else Outcome("lost")
    started = rollout.soak_started_at or rollout.stage_started_at
    if now - started < dt.timedelta(seconds=rollout.soak_seconds):
        return Outcome("none")
    if rollout.stage + 1 >= len(rollout.stages):
        rollout.state, rollout.updated_at = RolloutState.COMPLETED.value, now
        _history(rollout, now=now, event="completed", by=GATE_ACTOR)
        return _changed(session, rollout, settings=settings, publisher=publisher, now=now, outcome=Outcome("completed"))
    rollout.stage += 1
    rollout.state, rollout.stage_started_at, rollout.soak_started_at = RolloutState.RUNNING.value, now, None
    rollout.updated_at = now
    _history(rollout, now=now, event="advanced", by=GATE_ACTOR)
    return _changed(session, rollout, settings=settings, publisher=publisher, now=now, outcome=Outcome("advanced"))


def _changed(
    session: Session, rollout: Rollout, *, settings: Settings, publisher: Publisher, now: dt.datetime, outcome: Outcome
) -> Outcome:
    """Write a stage change (compare-and-set), republish the group, audit it; commit."""
    if not _flush(session):
        return Outcome("lost")
    republish(session, settings, _group(session, rollout), now=now, publisher=publisher)
    detail = f"percent_bp={offered_bp(rollout)}" + (f" reason={outcome.reason}" if outcome.reason else "")
    _audit(
        session,
        rollout,
        now=now,
        actor=GATE_ACTOR,
        action=_GATE_ACTIONS[outcome.action],
        detail=detail,
    )
    if not _commit(session):
        return Outcome("lost")
    kind = "deployment" if rollout.deployment_id is not None else "os"
    if outcome.action == "halted":
        code = (outcome.reason or "").split(":", 1)[0].strip()
        metrics.ROLLOUT_HALTS.labels(kind=kind, reason=metrics.bounded_label(code)).inc()
    else:
        metrics.ROLLOUT_STAGE_CHANGES.labels(kind=kind).inc()
    return outcome


def resume(
    session: Session, who: Principal, rollout: Rollout, *, now: dt.datetime, settings: Settings, publisher: Publisher
) -> Rollout:
    """Resume a halted rollout at the stage it halted in (its soak and its rules start again); commit.

    Raises:
        Conflict: it is not halted (``rollout_not_halted``), or another change won the race (``rollout_changed``).
    """
    if rollout.state != RolloutState.HALTED.value:
        raise Conflict(
            f"rollout {rollout.id} is {rollout.state}; only a halted rollout resumes", code="rollout_not_halted"
        )
    rollout.state, rollout.halt_reason = RolloutState.RUNNING.value, None
    rollout.stage_started_at, rollout.soak_started_at, rollout.updated_at = now, None, now
    _history(rollout, now=now, event="resumed", by=who.actor)
    return _operator_change(session, who, rollout, "rollout.resume", now=now, settings=settings, publisher=publisher)


def abort(
    session: Session, who: Principal, rollout: Rollout, *, now: dt.datetime, settings: Settings, publisher: Publisher
) -> Rollout:
    """Abort a rollout: every device of the group is offered the previous release again; commit.

    Raises:
        Conflict: it is completed or aborted already (``rollout_finished``), or another change won the race.
    """
    if rollout.state in (RolloutState.COMPLETED.value, RolloutState.ABORTED.value):
        raise Conflict(f"rollout {rollout.id} is {rollout.state} already", code="rollout_finished")
    rollout.state, rollout.updated_at = RolloutState.ABORTED.value, now
    _history(rollout, now=now, event="aborted", by=who.actor)
    return _operator_change(session, who, rollout, "rollout.abort", now=now, settings=settings, publisher=publisher)


def _operator_change(
    session: Session,
    who: Principal,
    rollout: Rollout,
    action: str,
    *,
    now: dt.datetime,
    settings: Settings,
    publisher: Publisher,
) -> Rollout:
    changed = Conflict(f"rollout {rollout.id} changed meanwhile; show it and try again", code="rollout_changed")
    if not _flush(session):
        raise changed
    republish(session, settings, _group(session, rollout), now=now, publisher=publisher)
    _audit(session, rollout, now=now, actor=who.actor, action=action, detail=f"percent_bp={offered_bp(rollout)}")
    if not _commit(session):
        raise changed
    return rollout


@dataclass(frozen=True)
class StageReport:
    """One stage in ``deployment show``: its share, its devices, how many installed, and its health."""

    index: int
    percent_bp: int
    devices: int
    installed: int
    health: list[dict[str, object]]


def stage_reports(session: Session, rollout: Rollout, health: HealthSource, *, now: dt.datetime) -> list[StageReport]:
    """Progress and health of every stage (stages nest: stage ``k`` holds the devices of the stages before it)."""
    shipped = releases(session, rollout)
    out: list[StageReport] = []
    for index, percent in enumerate(rollout.stages):
        members = stage_members(session, rollout, int(percent))
        rows: list[dict[str, object]] = []
        for release in shipped:
            seen = health.release_health(
                session,
                rollout.tenant_id,
                component_id=release.component_id,
                version=release.version,
                since=rollout.created_at,
                until=now,
                group_id=rollout.group_id,
                device_ids=members,
            )
            rows.append(
                {
                    "component_id": release.component_id,
                    "version": release.version,
                    "devices": seen.devices,
                    "crashed_devices": seen.crashed_devices,
                    "crash_free_rate": seen.crash_free_rate,
                }
            )
        out.append(StageReport(index, int(percent), len(members), _installed(session, rollout, members, shipped), rows))
    return out
