"""What a device group's TUF repository holds, and the one seam to the TUF slice.

Every change that alters a group's targets or update settings (deployment
created, OS published, promoted or revoked on its feed, policy, feed or
maintenance window changed) calls :func:`republish` before it commits. Once the
session commits, the group's :class:`~bastion.service.tuf.TargetSpec` list
(docs/updates.md "Fleet model") is computed from the committed state and handed
to a :class:`Publisher` (commit first, then publish: ADR 0018); at start-up
:func:`reconcile_groups` republishes every group from the database. The real publisher is
:mod:`bastion.service.tuf`; tests may pass an in-memory one with the same methods.

Example:
    >>> republish(session, settings, group, now=now, publisher=TufPublisher())  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine, bindparam, event, select
from sqlalchemy.orm import Session

from bastion.images.semver import lenient_semver_key
from bastion.service import tuf
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.errors import NotFound, ServiceError
from bastion.service.fleet import repository
from bastion.service.fleet.deltas import delta_targets
from bastion.service.fleet.limits import DEFAULT_FLEET_LIMITS, FleetLimits
from bastion.service.fleet.policy import OsFeed, UpdatePolicy
from bastion.service.models import AppImage, AuditEvent, Device, DeviceGroup, OsImage, Rollout
from bastion.service.rollouts.rules import LIVE_STATES, STAGED_STATES
from bastion.service.tuf import TargetSpec

__all__ = [
    "Publisher",
    "PublisherDep",
    "TargetSpec",
    "TufPublisher",
    "app_target_path",
    "blob_store",
    "get_publisher",
    "group_custom",
    "newest_os_images",
    "offered_bp",
    "os_target_path",
    "publish_committed",
    "reconcile_groups",
    "remove_repositories",
    "republish",
    "republish_feeds",
    "targets_for_group",
    "update_pointers",
]

#: Group roots kept in memory for the attestation answer (a root v1 never changes).
ROOT_CACHE_SIZE = 1024


class Publisher(Protocol):
    """What the fleet needs from the TUF slice."""

    def publish_group(
        self,
        settings: Settings,
        group_id: str,
        targets: Sequence[TargetSpec],
        *,
        now: dt.datetime,
        custom: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the group's repository for exactly ``targets`` and the group-wide ``custom`` (idempotent)."""

    def group_root(self, settings: Settings, group_id: str) -> bytes:
        """Return the group's ``1.root.json``."""


class TufPublisher:
    """The real publisher: :mod:`bastion.service.tuf`."""

    def publish_group(
        self,
        settings: Settings,
        group_id: str,
        targets: Sequence[TargetSpec],
        *,
        now: dt.datetime,
        custom: Mapping[str, Any] | None = None,
    ) -> None:
        tuf.publish_group(settings, group_id, targets, now=now, custom=custom)

    def group_root(self, settings: Settings, group_id: str) -> bytes:
        return tuf.group_root(settings, group_id)


def get_publisher(request: Request) -> Publisher:
    """The app's publisher (``app.state.tuf_publisher``, else :class:`TufPublisher`)."""
    publisher = getattr(request.app.state, "tuf_publisher", None)
    return publisher if publisher is not None else TufPublisher()


PublisherDep = Annotated[Publisher, Depends(get_publisher)]


def blob_store(settings: Settings) -> BlobStore:
    """The service's blob store (``BASTION_HOME/blobs``)."""
    return BlobStore(settings.home / "blobs")


def os_target_path(image: OsImage) -> str:
    """``os/<component_id>/<version>.img``."""
    return f"os/{image.component_id}/{image.version}.img"


def app_target_path(image: AppImage) -> str:
    """``apps/<component_id>/<version>.img``."""
    return f"apps/{image.component_id}/{image.version}.img"


def _image_custom(image_type: str, component_id: str, version: str, security_version: int) -> dict[str, Any]:
    return {
        "bastion": {
            "image_type": image_type,
            "component_id": component_id,
            "version": version,
            "security_version": security_version,
        }
    }


def newest_os_images(session: Session, settings: Settings, tenant_id: str, feed: OsFeed) -> list[OsImage]:
    """The tenant's servable OS images on ``feed``, newest (semantic version) first.

    Images published before their files were kept (no blob) cannot be served and are left out.
    """
    store = blob_store(settings)
    images = [i for i in repository.feed_os_images(session, tenant_id, feed) if store.exists(i.measurement)]
    images.sort(key=lambda i: (lenient_semver_key(i.version), i.security_version, i.id), reverse=True)
    return images


def targets_for_group(
    session: Session, group: DeviceGroup, settings: Settings, *, limits: FleetLimits = DEFAULT_FLEET_LIMITS
) -> list[TargetSpec]:
    """The targets a group's devices should have (docs/updates.md).

    ``NoUpdates``: nothing. Otherwise the newest OS on the group's feed (plus
    deltas to it from up to ``limits.max_delta_sources`` older ones); with
    ``UpdateAll`` also the apps of the group's current deployment.
    """
    policy = UpdatePolicy(group.update_policy)
    if policy is UpdatePolicy.NO_UPDATES:
        return []
    targets: list[TargetSpec] = []
    images = newest_os_images(session, settings, group.tenant_id, OsFeed(group.os_feed))
    if images:
        newest = images[0]
        os_staged = _staged(repository.os_rollout(session, group.id, newest.id))
        full = TargetSpec(
            path=os_target_path(newest),
            blob_sha256=newest.measurement,
            length=newest.size,
            custom=_with_rollout(
                _image_custom("os", newest.component_id, newest.version, newest.security_version), os_staged
            ),
        )
        targets.append(full)
        if os_staged is not None:
            targets.extend(_os_fallback(session, settings, os_staged, newest))
        older = [i.measurement for i in images[1:] if i.measurement != newest.measurement]
        for delta in delta_targets(
            settings, blob_store(settings), older[: limits.max_delta_sources], newest.measurement
        ):
            targets.append(
                TargetSpec(
                    path=f"os-delta/{delta.from_sha256}/{newest.version}.patch",
                    blob_sha256=delta.patch_sha256,
                    length=delta.size,
                    custom={
                        **full.custom,
                        "delta": {"method": delta.method, "from": delta.from_sha256, "to": full.path},
                    },
                )
            )
    if policy is UpdatePolicy.UPDATE_ALL:
        deployment = repository.current_deployment(session, group.id)
        if deployment is not None:
            staged = _staged(repository.deployment_rollout(session, deployment.id))
            for app in repository.deployment_images(session, deployment.id):
                targets.append(_app_target(app, staged))
            if staged is not None:
                for entry in staged.previous:
                    previous = session.get(AppImage, entry.get("image_id"))
                    if previous is not None and previous.tenant_id == group.tenant_id:
                        targets.append(_app_target(previous, staged, fallback=True))
    return targets


def offered_bp(rollout: Rollout) -> int:
    """The share of the group (basis points) offered the new release: the current stage's while the
    rollout is live, none once it is halted or aborted (everyone is offered the fallback)."""
    return int(rollout.stages[rollout.stage]) if rollout.state in LIVE_STATES else 0


def _staged(rollout: Rollout | None) -> Rollout | None:
    """The rollout if its targets carry stage data (a completed rollout publishes plain targets)."""
    return rollout if rollout is not None and rollout.state in STAGED_STATES else None


def _with_rollout(custom: dict[str, Any], rollout: Rollout | None, *, fallback: bool = False) -> dict[str, Any]:
    """``custom.bastion.rollout = {"seed", "percent_bp"[, "fallback": true]}`` (docs/updates.md "Staged rollouts")."""
    if rollout is None:
        return custom
    marker: dict[str, Any] = {"seed": rollout.seed, "percent_bp": offered_bp(rollout)}
    if fallback:
        marker["fallback"] = True
    custom["bastion"]["rollout"] = marker
    return custom


def _app_target(app: AppImage, rollout: Rollout | None, *, fallback: bool = False) -> TargetSpec:
    return TargetSpec(
        path=app_target_path(app),
        blob_sha256=app.sha256,
        length=app.size,
        custom=_with_rollout(
            _image_custom("app", app.component_id, app.version, app.security_version), rollout, fallback=fallback
        ),
    )


def _os_fallback(session: Session, settings: Settings, rollout: Rollout, newest: OsImage) -> list[TargetSpec]:
    """The previous OS as the fallback target, where the boot chain's anti-rollback lets devices go back.

    A device that confirmed ``newest`` raised its anti-rollback counter to its security
    version, so a previous OS with a lower security version could never boot there:
    it is not offered (docs/adr/0017), and such a halted rollout only stops spreading.
    """
    for entry in rollout.previous:
        previous = session.get(OsImage, entry.get("os_image_id"))
        if (
            previous is None
            or previous.tenant_id != newest.tenant_id
            or previous.revoked_at is not None
            or previous.measurement == newest.measurement
            or previous.version == newest.version
            or previous.security_version < newest.security_version
            or not blob_store(settings).exists(previous.measurement)
        ):
            continue
        return [
            TargetSpec(
                path=os_target_path(previous),
                blob_sha256=previous.measurement,
                length=previous.size,
                custom=_with_rollout(
                    _image_custom("os", previous.component_id, previous.version, previous.security_version),
                    rollout,
                    fallback=True,
                ),
            )
        ]
    return []


def group_custom(group: DeviceGroup) -> dict[str, Any]:
    """The group's update settings, signed into its targets role's ``custom`` (docs/updates.md).

    ``{"bastion": {"maintenance_window": {"start": "HH:MM", "duration_minutes": n} | None,
    "update_policy": "UpdateAll" | ...}}``. Devices read the window from here after
    every TUF refresh, so a change takes effect at their next check-in rather
    than at their next attestation (issue 7, section 2).
    """
    window = (
        {"start": group.window_start, "duration_minutes": group.window_minutes}
        if group.window_start is not None and group.window_minutes is not None
        else None
    )
    return {"bastion": {"maintenance_window": window, "update_policy": group.update_policy}}


#: Where :func:`republish` keeps the groups a session will publish once it commits.
_PENDING_KEY = "bastion.tuf_pending"
_HOOKED_KEY = "bastion.tuf_hooked"
#: Fault-injection points (tests raise from :data:`fault_hook` to stand for a killed worker).
STEP_SCHEDULED = "scheduled"  # republish() registered the group; nothing is committed yet
STEP_COMMITTED = "committed"  # the session committed; this group is not published yet
STEP_PUBLISHED = "published"  # this group is published from the committed state


def _no_fault(step: str, group_id: str) -> None:
    del step, group_id


#: Called at each step above; tests replace it (a BaseException raised there is a SIGKILL).
fault_hook: Callable[[str, str], None] = _no_fault

_log = logging.getLogger(__name__)


@dataclass
class _Pending:
    settings: Settings
    publisher: Publisher
    limits: FleetLimits
    now: dt.datetime


def publish_committed(
    bind: Engine | Connection,
    settings: Settings,
    group_id: str,
    *,
    now: dt.datetime,
    publisher: Publisher,
    limits: FleetLimits = DEFAULT_FLEET_LIMITS,
) -> list[TargetSpec] | None:
    """Publish a group from the committed database state, read afresh under its publish lock.

    Idempotent: publishing an unchanged target set writes nothing (no version is
    bumped). The publish lock orders concurrent workers (and processes) so that a
    publish from an older read never lands after one from a newer read.

    Returns:
        The published targets, or None when the group no longer exists.
    """
    with tuf.publish_lock(settings, group_id), Session(bind=bind) as fresh:
        group = fresh.get(DeviceGroup, group_id)
        if group is None:
            return None
        targets = targets_for_group(fresh, group, settings, limits=limits)
        custom = group_custom(group)
        clears = repository.signed_blocklist_clears(fresh, group_id)
        if clears:  # only then: a group without clears keeps its custom (and its versions)
            custom["bastion"]["blocklist_clears"] = clears
        fresh.rollback()  # end the read before the (slow) file work
        publisher.publish_group(settings, group_id, targets, now=now, custom=custom)
    fault_hook(STEP_PUBLISHED, group_id)
    return targets


def _after_commit(session: Session) -> None:
    pending: dict[str, _Pending] = session.info.pop(_PENDING_KEY, {})
    if not pending:
        return
    bind = session.get_bind()
    for group_id, job in pending.items():
        fault_hook(STEP_COMMITTED, group_id)
        try:
            publish_committed(bind, job.settings, group_id, now=job.now, publisher=job.publisher, limits=job.limits)
        except (ServiceError, OSError) as exc:  # committed: a retry or the start-up reconcile completes it
            _log.warning("publishing group %s after commit failed: %s", group_id, type(exc).__name__)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)  # nothing was committed: nothing to publish


def _schedule(session: Session, group_id: str, job: _Pending) -> None:
    if not session.info.get(_HOOKED_KEY):
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)
        session.info[_HOOKED_KEY] = True
    pending: dict[str, _Pending] = session.info.setdefault(_PENDING_KEY, {})
    pending[group_id] = job
    fault_hook(STEP_SCHEDULED, group_id)


def republish(
    session: Session,
    settings: Settings,
    group: DeviceGroup,
    *,
    now: dt.datetime,
    publisher: Publisher,
    limits: FleetLimits = DEFAULT_FLEET_LIMITS,
) -> list[TargetSpec]:
    """Publish the group's targets and update settings once ``session`` commits; return them as they stand now.

    Commit first, then publish (STYLE 23, ADR 0018): nothing reaches the TUF
    repository until the database holds it. The publish reads the committed
    state afresh, so a rollback publishes nothing, and a worker killed between
    the commit and the publish leaves a repository that is behind (never ahead),
    which :func:`reconcile_groups` brings up to date at start-up.
    """
    targets = targets_for_group(session, group, settings, limits=limits)
    _schedule(session, group.id, _Pending(settings, publisher, limits, now))
    return targets


def republish_feeds(
    session: Session,
    settings: Settings,
    tenant_id: str,
    feeds: Sequence[OsFeed],
    *,
    now: dt.datetime,
    publisher: Publisher,
    limits: FleetLimits = DEFAULT_FLEET_LIMITS,
) -> int:
    """Republish (after commit) every group of the tenant on ``feeds`` that takes OS updates; return how many."""
    groups = repository.groups_following(session, tenant_id, feeds)
    for group in groups:
        _schedule(session, group.id, _Pending(settings, publisher, limits, now))
    return len(groups)


def reconcile_groups(
    bind: Engine | Connection,
    settings: Settings,
    *,
    now: dt.datetime,
    publisher: Publisher,
    tenant_id: str | None = None,
    feeds: Sequence[OsFeed] | None = None,
    limits: FleetLimits = DEFAULT_FLEET_LIMITS,
) -> int:
    """Recompute and publish every group's repository from the database (start-up; idempotent).

    A group whose repository already matches is left untouched. A failing group
    does not stop the others; it is logged and retried at the next start or publish.

    Returns:
        How many groups were checked.
    """
    with Session(bind=bind) as session:
        query = select(DeviceGroup.id).order_by(DeviceGroup.id)
        if tenant_id is not None:
            query = query.where(DeviceGroup.tenant_id == tenant_id)
        if feeds is not None:
            query = query.where(DeviceGroup.os_feed.in_([f.value for f in feeds]))
        group_ids = list(session.scalars(query))
    for group_id in group_ids:
        try:
            publish_committed(bind, settings, group_id, now=now, publisher=publisher, limits=limits)
        except (ServiceError, OSError) as exc:
            _log.warning("reconciling group %s failed: %s", group_id, type(exc).__name__)
    if tenant_id is None and feeds is None:  # every group: a repository of a deleted group is removed
        remove_repositories(settings, _deleted_groups(bind, tuf.list_groups(settings, complete=False)))
    return len(group_ids)


#: Group ids looked up per statement when the reconcile checks which directories' groups are gone.
_GONE_CHUNK = 500


def _deleted_groups(bind: Engine | Connection, listed: Sequence[str]) -> list[str]:
    """Which listed repository directories belong to groups whose deletion the database records.

    Two reads after the listing. First, which groups are not in the database: read afresh,
    not from the reconcile's first read, since a group created meanwhile (by another worker)
    commits its row before its repository exists. Then, of those, which have an ``ok``
    ``device_group.delete`` audit record (written in the delete's own transaction). Absence
    alone is no proof: a service pointed at the wrong database would otherwise remove
    every group's repository and sealed keys. Such a directory is kept, and logged.
    """
    gone: list[str] = []
    deleted: set[str] = set()
    with Session(bind=bind) as session:
        for start in range(0, len(listed), _GONE_CHUNK):
            chunk = list(listed[start : start + _GONE_CHUNK])
            present = set(session.scalars(select(DeviceGroup.id).where(DeviceGroup.id.in_(chunk))))
            gone += [group_id for group_id in chunk if group_id not in present]
        for start in range(0, len(gone), _GONE_CHUNK):
            targets = [f"device_group:{group_id}" for group_id in gone[start : start + _GONE_CHUNK]]
            recorded = session.scalars(
                select(AuditEvent.target).where(
                    AuditEvent.action == "device_group.delete",
                    AuditEvent.outcome == "ok",
                    AuditEvent.target.in_(targets),
                )
            )
            deleted.update(target.removeprefix("device_group:") for target in recorded)
    for group_id in gone:
        if group_id not in deleted:
            _log.warning(
                "the TUF repository of group %s has no group in the database and no record of its deletion: "
                "kept (is the service on the right database?)",
                group_id,
            )
    return [group_id for group_id in gone if group_id in deleted]


def remove_repositories(settings: Settings, group_ids: Sequence[str]) -> int:
    """Remove the TUF repositories (and sealed keys) of deleted groups, after the delete committed; how many.

    A failure is logged, not raised: the delete stands, and the start-up reconcile
    (:func:`reconcile_groups`) removes what is left.
    """
    removed = 0
    for group_id in group_ids:
        try:
            removed += int(tuf.remove_group(settings, group_id))
        except (ServiceError, OSError) as exc:
            _log.warning("removing the repository of deleted group %s failed: %s", group_id, type(exc).__name__)
    return removed


class _RootCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple[str, str], value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_roots = _RootCache(ROOT_CACHE_SIZE)


#: The device's group and window, one indexed join (built once: it runs on every attestation).
_POINTER_QUERY = (
    select(DeviceGroup.id, DeviceGroup.window_start, DeviceGroup.window_minutes)
    .join(Device, Device.group_id == DeviceGroup.id)
    .where(Device.device_id == bindparam("device_id"))
)


def update_pointers(
    db: Session | Connection, device_id: str, *, settings: Settings, publisher: Publisher | None = None
) -> dict[str, Any] | None:
    """The attestation answer's ``updates`` value for a device (docs/updates.md "TUF repositories").

    Returns:
        ``{"group_id", "tuf_base": "/tuf/<group_id>", "root": "<base64 of 1.root.json>",
        "maintenance_window": {"start": "HH:MM", "duration_minutes": n} | None}``,
        or None when the device is in no group or its group has no repository yet.
    """
    row = db.execute(_POINTER_QUERY, {"device_id": device_id}).first()
    if row is None:
        return None
    group_id, window_start, window_minutes = row
    key = (str(settings.home), group_id)
    root = _roots.get(key)
    if root is None:
        try:
            root = (publisher or TufPublisher()).group_root(settings, group_id)
        except NotFound:
            return None
        _roots.put(key, root)
    window = (
        {"start": window_start, "duration_minutes": window_minutes}
        if window_start is not None and window_minutes is not None
        else None
    )
    return {
        "group_id": group_id,
        "tuf_base": f"/tuf/{group_id}",
        "root": base64.b64encode(root).decode("ascii"),
        "maintenance_window": window,
    }
