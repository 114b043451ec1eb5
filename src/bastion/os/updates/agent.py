"""The update agent: check the group's TUF repository, install apps and the OS, report.

It runs inside the OS process, as a scheduler job (at boot after the first
successful attestation, then every ``update_interval_s``) and on demand through
the control socket. One check:

1. refresh the group's TUF metadata (:mod:`~bastion.os.updates.tuf_client`);
2. pick what is new: per app the newest version above the installed one; the
   newest OS above the running one; never a target refused or rolled back before.
   A target of a staged rollout (``custom.bastion.rollout``) is for this device only
   if it is in the stage (:func:`bastion.images.rollout.in_stage`); a device outside
   the stage takes the rollout's fallback (the previous release) instead, even if
   it is older than what it runs, but never below the anti-rollback security
   version (docs/updates.md "Staged rollouts");
3. honour the maintenance window (the one signed into the group's targets
   metadata, so a change applies at the next check-in), tell the apps (``update_pending``; when one hears it
   and may defer, they get ``AgentSettings.update_notice`` to answer) and honour their deferral
   (:mod:`~bastion.os.updates.policy`), before downloading anything; then
   ``update_ready`` (:mod:`bastion.os.appservices.sysevent`);
4. install apps (:mod:`~bastion.os.updates.app_update`), restarting only those apps;
5. stage the OS (:mod:`~bastion.os.updates.os_update`), hand it to the monitor
   (``install_os`` arms a trial), report, and ask for a reboot;
6. send a signed status report with the queued events.

At boot, :meth:`UpdateAgent.boot` reports a rollback the boot chain performed
(once), and :meth:`UpdateAgent.on_attested` confirms a trial boot once the new
OS has attested and started its apps.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bastion.crypto.keys import PublicKey
from bastion.hw.flash import EVENT_ROLLBACK, BootEvent
from bastion.images.rollout import MAX_SEED_CHARS, in_stage
from bastion.images.semver import is_newer
from bastion.monitor.errors import MonitorRefusedError
from bastion.os.apps.manager import AppManager
from bastion.os.apps.store import AppStore, InstalledApp
from bastion.os.appservices.sysevent import SysEventService
from bastion.os.sandbox.layers import summarize
from bastion.os.updates.agent_state import AgentState, load_agent_state, save_agent_state
from bastion.os.updates.app_update import install_app_target, target_identity
from bastion.os.updates.errors import UpdateError, UpdateFailedError, UpdateRefusedError, UpdateUnavailableError
from bastion.os.updates.events import EventQueue
from bastion.os.updates.fetcher import CachingFetcher
from bastion.os.updates.os_update import RunningOs, stage_os_update
from bastion.os.updates.pointer import GroupStore, MaintenanceWindow, UpdatePointer, signed_window
from bastion.os.updates.policy import decide, remaining_deferral, requested_deferral
from bastion.os.updates.reporter import DeviceStatus, StatusReporter
from bastion.os.updates.tuf_client import GroupRepository, Target, TufLimits

__all__ = ["AgentSettings", "CheckSummary", "UpdateAgent", "UpdateMonitor"]

_log = logging.getLogger("bastion.os.updates")


class _BootFacts(Protocol):
    @property
    def trial(self) -> bool: ...

    @property
    def last_event(self) -> BootEvent | None: ...


class UpdateMonitor(Protocol):
    """What the agent needs from the monitor (:class:`bastion.monitor.client.MonitorClient`)."""

    def read_counters(self) -> _BootFacts:
        """Boot facts: trial boot, last boot event."""
        ...

    def install_os(self, path: str) -> object:
        """Verify a staged image, write it to the inactive slot and arm a trial."""
        ...

    def confirm_boot(self) -> object:
        """Confirm the running trial slot."""
        ...

    def ack_boot_event(self) -> None:
        """Clear the reported boot event."""
        ...


@dataclass(frozen=True)
class AgentSettings:
    """The agent's knobs.

    Attributes:
        interval: time between checks (device config ``update_interval_s``).
        retry: time before the next check after a transient failure.
        app_updates: install app targets (device config ``app_updates``).
        tuf: bounds of the TUF client.
        update_notice: how long apps that hear ``update_pending`` and may defer get to answer it.
    """

    interval: dt.timedelta = dt.timedelta(hours=20)
    retry: dt.timedelta = dt.timedelta(minutes=10)
    app_updates: bool = True
    tuf: TufLimits = field(default_factory=TufLimits)
    update_notice: dt.timedelta = dt.timedelta(seconds=30)


@dataclass
class CheckSummary:
    """The outcome of one check (the control socket's answer).

    ``result`` is one of ``up-to-date``, ``installed``, ``reboot``, ``pending``
    (apps were told and may defer), ``deferred``, ``maintenance_window``,
    ``refused``, ``unavailable``, ``failed``, ``no-group``, ``not-attested``.
    """

    at: str
    result: str
    group_id: str | None = None
    installed: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    detail: str = ""
    next_check_at: str | None = None
    report: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def _hears_and_defers(app: InstalledApp) -> bool:
    """Whether ``app`` hears ``update_pending`` and may answer it with a deferral (it gets the notice)."""
    caps = app.manifest.capabilities
    return caps.software_update_deferral and caps.system_event_notifications


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Marker:
    """A target's ``custom.bastion.rollout``: the rollout's seed, the share offered, and whether it is the fallback."""

    seed: str
    percent_bp: int
    fallback: bool


def _rollout_marker(target: Target) -> _Marker | None:
    """The target's rollout marker; ``None`` for a target of no staged rollout.

    Raises:
        ValueError: the marker is malformed (the target is not for us).
    """
    meta: Any = target.custom.get("bastion")
    marker = meta.get("rollout") if isinstance(meta, dict) else None
    if marker is None:
        return None
    if not isinstance(marker, dict):
        raise ValueError("malformed rollout marker")
    seed, percent, fallback = marker.get("seed"), marker.get("percent_bp"), marker.get("fallback", False)
    if (
        not isinstance(seed, str)
        or not 0 < len(seed) <= MAX_SEED_CHARS
        or not isinstance(percent, int)
        or isinstance(percent, bool)
        or not isinstance(fallback, bool)
    ):
        raise ValueError("malformed rollout marker")
    return _Marker(seed, percent, fallback)


def _security_version(target: Target) -> int:
    """The target's claimed security version (0 if it claims none; the image header is checked later)."""
    meta: Any = target.custom.get("bastion")
    value = meta.get("security_version") if isinstance(meta, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class _Plan:
    apps: list[Target] = field(default_factory=list)
    os: Target | None = None
    deltas: list[Target] = field(default_factory=list)
    skipped_apps: int = 0  # app targets left alone in development mode


class UpdateAgent:
    """Checks for and installs updates; see the module docstring.

    Args:
        state_dir: the OS state directory (``updates.json``, ``staging/``).
        groups: the stored group pointer and trust anchors.
        service_url: the service's base URL (the TUF base path is appended).
        fetcher: ngclient's network access.
        monitor: the monitor (install, confirm, boot events).
        store: the app store.
        apps: the app manager.
        events: the persistent event queue.
        reporter: the status reporter.
        app_keys: the pinned app-signing keys.
        os_keys: returns the pinned OS-publisher keys.
        running: the running OS.
        device_id: this device's ID.
        settings: intervals and bounds.
        on_reboot: called once an OS update is armed (the runtime stops and exits for a reboot).
        sysevents: where update events go to the apps and their deferral requests come from.
        development: whether the device is in development mode now; then it takes no
            app targets from the cloud (sideloaded apps are the developer's).
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        groups: GroupStore,
        service_url: str,
        fetcher: CachingFetcher,
        monitor: UpdateMonitor,
        store: AppStore,
        apps: AppManager,
        events: EventQueue,
        reporter: StatusReporter,
        app_keys: Sequence[PublicKey],
        os_keys: Callable[[], Sequence[PublicKey]],
        running: RunningOs,
        device_id: str,
        settings: AgentSettings | None = None,
        on_reboot: Callable[[], None] = lambda: None,
        sysevents: SysEventService | None = None,
        development: Callable[[], bool] = lambda: False,
    ) -> None:
        self._dir = state_dir
        self._groups = groups
        self._service_url = service_url.rstrip("/")
        self.fetcher = fetcher
        self._monitor = monitor
        self.store = store
        self.apps = apps
        self.events = events
        self.reporter = reporter
        self._app_keys = tuple(app_keys)
        self._os_keys = os_keys
        self.running = running
        self._device_id = device_id
        self.settings = settings or AgentSettings()
        self._on_reboot = on_reboot
        self.sysevents = sysevents
        self.development = development
        self._lock = threading.RLock()
        self.state: AgentState = load_agent_state(state_dir)
        self.attested = False
        self.reboot_requested = False
        self.last_summary: CheckSummary | None = None

    @property
    def lock(self) -> threading.RLock:
        """Held while the agent installs or restarts apps (sideloading takes it too)."""
        return self._lock

    # --- helpers -----------------------------------------------------------------

    def _save(self) -> None:
        save_agent_state(self._dir, self.state)

    def _event(self, now: dt.datetime, kind: str, component_id: str = "", version: str = "", detail: str = "") -> None:
        self.events.record(
            at=int(now.timestamp()), kind=kind, component_id=component_id, version=version, detail=detail
        )

    def status(self) -> DeviceStatus:
        """What the next report says about the device."""
        pointer = self._groups.current()
        return DeviceStatus(
            device_id=self._device_id,
            os_version=self.running.version,
            boot_slot=self.running.boot_slot,
            group_id=pointer.group_id if pointer else None,
            installed=[(a.component_id, a.version) for a in self.store.installed()],
            sandbox={cid: summarize(layers) for cid, layers in self.apps.all_layers().items()},
        )

    def report(self, now: dt.datetime) -> str | None:
        """Send a status report (events queued so far); returns the reporter's result."""
        self.reporter.send(self.status(), now=now)
        return self.reporter.last_result

    # --- boot ----------------------------------------------------------------------

    def boot(self, now: dt.datetime) -> None:
        """At OS start: report a rollback the boot chain did (once), then start the apps."""
        with self._lock:
            facts = self._monitor.read_counters()
            event = facts.last_event
            if event is not None and event.kind == EVENT_ROLLBACK:
                if self.state.last_boot_event_at != event.at:
                    self._event(
                        now,
                        "os_rolled_back",
                        version=event.from_version,
                        detail=f"trial OS {event.from_version} failed; back on {event.to_version}",
                    )
                    pending = self.state.pending_os
                    if pending is not None and pending.get("sha256"):
                        self.state.mark_bad_os(pending["sha256"])  # never try this image again
                    self.state.pending_os = None
                    self.state.last_boot_event_at = event.at
                    self._save()
                    _log.warning("the boot chain rolled back from OS %s to %s", event.from_version, event.to_version)
                self._monitor.ack_boot_event()
            self.apps.start_all(now)

    def on_attested(self, now: dt.datetime) -> bool:
        """After a successful attestation; the first one of a boot confirms a trial.

        Returns:
            True on the first successful attestation of this boot (check for updates now).
        """
        with self._lock:
            first = not self.attested
            self.attested = True
            if not first:
                return False
            if self._monitor.read_counters().trial:
                try:
                    self._monitor.confirm_boot()
                except MonitorRefusedError as exc:
                    self._event(now, "update_failed", version=self.running.version, detail=f"confirm refused: {exc}")
                    _log.error("the monitor refused to confirm this trial boot: %s", exc)
                else:
                    self._event(
                        now, "os_confirmed", version=self.running.version, detail=f"slot {self.running.boot_slot}"
                    )
                    _log.info("trial boot of OS %s confirmed", self.running.version)
                self.state.pending_os = None
                self._save()
            return True

    # --- checks --------------------------------------------------------------------

    def job(self, now: dt.datetime) -> dt.datetime:
        """Scheduler job: check, and say when to check next."""
        summary = self.check(now)
        if summary.next_check_at is not None:
            return dt.datetime.fromisoformat(summary.next_check_at)
        return now + self.settings.interval

    def check(self, now: dt.datetime) -> CheckSummary:
        """Run one update check at ``now`` and return its summary (never raises an UpdateError)."""
        with self._lock:
            summary = CheckSummary(at=_iso(now), result="up-to-date")
            if not self.attested:
                summary.result, summary.detail = "not-attested", "the device has not attested yet in this boot"
            elif self.reboot_requested:
                summary.result, summary.detail = "reboot", "an OS update is armed; rebooting"
            else:
                pointer = self._groups.current()
                if pointer is None:
                    summary.result, summary.detail = "no-group", "the device is in no device group"
                else:
                    summary.group_id = pointer.group_id
                    self._check_group(pointer, summary, now)
            if summary.next_check_at is None and summary.result not in ("reboot",):
                delay = self.settings.retry if summary.result == "unavailable" else self.settings.interval
                summary.next_check_at = _iso(now + delay)
            if self.attested and summary.result != "reboot" and (len(self.events) or summary.result == "installed"):
                summary.report = self.report(now)
            self.state.last_summary = summary.to_json()
            self._save()
            self.last_summary = summary
            return summary

    def _repository(self, pointer: UpdatePointer) -> GroupRepository:
        return GroupRepository(
            metadata_dir=self._groups.metadata_dir(pointer.group_id),
            base_url=self._service_url + pointer.tuf_base,
            fetcher=self.fetcher,
            limits=self.settings.tuf,
        )

    def _refused(self, now: dt.datetime, summary: CheckSummary, target: Target | None, exc: UpdateError) -> None:
        cid = version = ""
        if target is not None:
            try:
                _, cid, version = target_identity(target)
            except UpdateRefusedError:
                cid = target.path
            if self._app_keys or exc.reason != "signature":  # no pinned key yet: provisioning may fix it
                self.state.refuse(target.sha256, exc.reason)  # never loop on the same bad target
        self._event(now, "update_refused", cid, version, str(exc))
        summary.refused.append({"target": target.path if target else "metadata", "reason": exc.reason})
        _log.warning("update refused: %s", exc)

    def _failed(self, now: dt.datetime, summary: CheckSummary, target: Target, exc: UpdateError) -> None:
        cid, version = "", ""
        try:
            _, cid, version = target_identity(target)
        except UpdateRefusedError:
            cid = target.path
        self._event(now, "update_failed", cid, version, str(exc))
        summary.failed.append({"target": target.path, "reason": exc.reason})
        _log.warning("update of %s failed: %s", target.path, exc)

    def _plan(self, targets: list[Target]) -> _Plan:
        plan = _Plan()
        newest_app: dict[str, tuple[str, Target]] = {}
        fallbacks: list[tuple[str, str, str, Target]] = []
        installed = {a.component_id: a.version for a in self.store.installed()}
        development = self.development()
        for target in targets:
            if self.state.is_blocked(target.sha256):
                continue
            if "delta" in target.custom:
                plan.deltas.append(target)
                continue
            try:
                kind, cid, version = target_identity(target)
                marker = _rollout_marker(target)
                if marker is not None:
                    chosen = in_stage(self._device_id, marker.seed, percent_bp=marker.percent_bp)
                    if marker.fallback:
                        if not chosen:  # outside the stage: the previous release is this device's
                            fallbacks.append((kind, cid, version, target))
                        continue
                    if not chosen:
                        continue  # the new release is not offered to this device (yet, or any more)
                if kind == "app" and development:
                    plan.skipped_apps += 1
                elif kind == "app" and self.settings.app_updates:
                    current = installed.get(cid)
                    if (current is None or is_newer(version, current)) and (
                        cid not in newest_app or is_newer(version, newest_app[cid][0])
                    ):
                        newest_app[cid] = (version, target)
                elif (
                    kind == "os"
                    and is_newer(version, self.running.version)
                    and (plan.os is None or is_newer(version, target_identity(plan.os)[2]))
                ):
                    plan.os = target
            except (UpdateRefusedError, ValueError):
                continue  # a target we cannot read is not for us
        self._plan_fallbacks(plan, fallbacks, newest_app, installed, development=development)
        plan.apps = [t for _, t in sorted(newest_app.values(), key=lambda item: item[1].path)]
        return plan

    def _plan_fallbacks(
        self,
        plan: _Plan,
        fallbacks: list[tuple[str, str, str, Target]],
        newest_app: dict[str, tuple[str, Target]],
        installed: dict[str, str],
        *,
        development: bool,
    ) -> None:
        """Take a staged rollout's fallback where this device is outside the stage (even a downgrade).

        Never below the anti-rollback floor: an app's is the security version of the
        target it installed last, the OS's is the running OS's (the boot chain would
        refuse a lower one anyway, after the device had spent a download and a trial).
        """
        for kind, cid, version, target in fallbacks:
            security = _security_version(target)
            if kind == "app" and development:
                plan.skipped_apps += 1
            elif kind == "app" and self.settings.app_updates:
                if installed.get(cid) == version:
                    newest_app.pop(cid, None)  # on the fallback already: stay
                elif security >= self.state.app_security.get(cid, 0):
                    newest_app[cid] = (version, target)
            elif kind == "os":
                if version == self.running.version:
                    plan.os = None
                elif security >= self.running.security_version:
                    plan.os = target

    def _check_group(self, pointer: UpdatePointer, summary: CheckSummary, now: dt.datetime) -> None:
        try:
            repo = self._repository(pointer)
            repo.refresh()
            plan = self._plan(repo.targets())
            # The window in force is the one signed into the group's targets metadata:
            # a change reaches the device at this check-in, not at its next attestation.
            window = signed_window(repo.group_custom(), pointer.maintenance_window)
        except UpdateUnavailableError as exc:
            summary.result, summary.detail = "unavailable", str(exc)
            _log.info("update check: %s", exc)
            return
        except UpdateError as exc:
            self._refused(now, summary, None, exc)
            summary.result, summary.detail = "refused", str(exc)
            return
        if plan.skipped_apps:
            summary.detail = f"development mode: {plan.skipped_apps} cloud app target(s) not taken"
        if not plan.apps and plan.os is None:
            self._settle()
            return
        if not self._may_install(window, plan, summary, now):
            return
        self._install_apps(repo, plan.apps, summary, now)
        if plan.os is not None:
            self._install_os(repo, plan.os, plan.deltas, summary, now)
        if summary.result == "up-to-date" and (summary.refused or summary.failed):
            summary.result = "refused" if summary.refused else "failed"

    def _publish(self, kind: str, plan: _Plan, now: dt.datetime, minutes: int, detail: str = "") -> None:
        if self.sysevents is None:
            return
        for update in ("app",) * bool(plan.apps) + ("os",) * (plan.os is not None):
            self.sysevents.publish(kind, update=update, max_deferral_minutes=minutes, now=now, detail=detail)

    def _settle(self) -> None:
        if self.state.update_noticed_at is not None or self.state.deferral_started is not None:
            self.state.update_noticed_at = self.state.deferral_started = None
            if self.sysevents is not None:
                self.sysevents.settle()

    def _may_install(
        self, window: MaintenanceWindow | None, plan: _Plan, summary: CheckSummary, now: dt.datetime
    ) -> bool:
        """Window, notice to the apps, deferral (see :mod:`~bastion.os.updates.policy`); False = not now."""
        installed = self.store.installed()
        requested = requested_deferral(installed, self.sysevents.requests() if self.sysevents else {}, now)
        started = (
            dt.datetime.fromtimestamp(self.state.deferral_started, dt.UTC) if self.state.deferral_started else None
        )
        decision = decide(
            now,
            window=window,
            requested_until=requested[0] if requested else None,
            deferral_started=started,
        )
        if decision.reason == "maintenance_window":
            summary.result = decision.reason
            summary.next_check_at = _iso(decision.retry_at) if decision.retry_at else None
            summary.detail = f"updates wait until {summary.next_check_at}"
            return False
        left = int(remaining_deferral(now, started).total_seconds() // 60)
        if self.state.update_noticed_at is None:
            self.state.update_noticed_at = int(now.timestamp())
            self._publish("update_pending", plan, now, left)
            if any(_hears_and_defers(a) for a in installed):
                summary.result = "pending"
                summary.next_check_at = _iso(now + self.settings.update_notice)
                summary.detail = f"apps were told; updates wait until {summary.next_check_at}"
                return False
        if not decision.allowed:
            summary.result = decision.reason
            summary.next_check_at = _iso(decision.retry_at) if decision.retry_at else None
            if self.state.deferral_started is None and decision.deferral_started:
                self.state.deferral_started = int(decision.deferral_started.timestamp())
                askers = ",".join(requested[1]) if requested else ""
                self._event(now, "update_deferred", askers[:64], detail=f"until {summary.next_check_at}")
                self._publish("update_deferred", plan, now, left, detail=f"until {summary.next_check_at}")
            summary.detail = f"updates wait until {summary.next_check_at}"
            return False
        self._publish("update_ready", plan, now, 0)
        self.state.deferral_started = self.state.update_noticed_at = None
        if self.sysevents is not None:
            self.sysevents.settle()
        return True

    def _install_apps(
        self, repo: GroupRepository, targets: list[Target], summary: CheckSummary, now: dt.datetime
    ) -> None:
        for target in targets:
            try:
                app = install_app_target(
                    repo, target, keys=self._app_keys, store=self.store, staging_dir=self._dir / "staging"
                )
            except UpdateRefusedError as exc:
                self._refused(now, summary, target, exc)
                continue
            except UpdateUnavailableError as exc:
                summary.detail = str(exc)
                continue
            except UpdateFailedError as exc:
                self._failed(now, summary, target, exc)
                continue
            self.state.remember_app_security(app.component_id, _security_version(target))
            self._event(now, "app_installed", app.component_id, app.version, target.path)
            summary.installed.append({"component_id": app.component_id, "version": app.version})
            summary.result = "installed"
            self.apps.restart(app.component_id, now)  # only this app restarts

    def _install_os(
        self, repo: GroupRepository, target: Target, deltas: list[Target], summary: CheckSummary, now: dt.datetime
    ) -> None:
        _, cid, version = target_identity(target)
        try:
            staged = stage_os_update(
                repo, target, deltas, self.running, keys=self._os_keys(), staging_dir=self._dir / "staging"
            )
        except UpdateRefusedError as exc:
            self._refused(now, summary, target, exc)
            return
        except UpdateUnavailableError as exc:
            summary.detail = str(exc)
            return
        except UpdateError as exc:
            self._failed(now, summary, target, exc)
            return
        how = "delta" if staged.via_delta else "full image"
        self._event(
            now,
            "os_staged",
            cid,
            version,
            how + (f" (delta failed: {staged.delta_error})" if staged.delta_error else ""),
        )
        self.state.pending_os = {"version": version, "sha256": target.sha256, "from_version": self.running.version}
        self._save()  # before the monitor arms the trial: a rollback must know which image failed
        try:
            self._monitor.install_os(str(staged.path))
        except MonitorRefusedError as exc:
            self.state.pending_os = None
            self.state.refuse(target.sha256, f"monitor:{exc.code}")
            self._event(now, "update_refused", cid, version, f"the monitor refused the image: {exc.detail}")
            summary.refused.append({"target": target.path, "reason": f"monitor:{exc.code}"})
            staged.path.unlink(missing_ok=True)
            return
        staged.path.unlink(missing_ok=True)
        self._event(now, "os_installed", cid, version, f"trial armed ({how})")
        summary.installed.append({"component_id": cid, "version": version})
        summary.result, summary.detail = "reboot", f"OS {version} armed for a trial boot"
        self.reboot_requested = True
        _log.info("OS %s installed to the inactive slot; rebooting into a trial", version)
        self.report(now)
        self._on_reboot()
