"""The app manager: runs each installed app in its own sandbox, watches it, restarts it.

For each installed app it starts the manifest's ``EntryPoint`` with ``CmdArgs``
through :class:`~bastion.os.apps.launch.AppLauncher`: a bubblewrap sandbox (own
uid in its own user, pid, ipc, uts, cgroup and network namespaces, no
capabilities, seccomp, Landlock, rlimits; see docs/adr/0005-app-sandbox.md)
with its applibs socket as fd 3, and stdout/stderr appended to
``DEV/os-state/apps/<component_id>.log`` (rotated at a bound). Inside, ``/app``
is its version directory (the cwd), ``/storage`` its MutableStorage directory
(``DEV/os-state/app-data/<component_id>/``, read-only: writes go through
applibs), ``/tmp`` a private bounded tmpfs.

A crashed app is recorded (``app_failed``; a seccomp kill also as
``sandbox_violation``) and restarted with exponential backoff; an app that
stayed up long enough starts again from the initial delay. If the host cannot
build the sandbox, no app starts and each is recorded as ``sandbox_unavailable``
with what is missing. Stopping an app stops its whole sandbox (SIGTERM, then
SIGKILL of its pid namespace) and checks that none of its processes is left.

An app that arms the application watchdog (:mod:`bastion.os.appservices.watchdog`)
and misses its deadline is killed, recorded (``app_watchdog``) and restarted with
the same backoff. Storage is one directory per component ID, so it survives
reboots and app updates; deferral requests go through applibs, not a file.

``insecure_no_sandbox`` (the device option ``--insecure-no-sandbox``) runs apps
as plain child processes of the OS, still with their applibs socket; their
layers say ``none (insecure-no-sandbox)``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.os.apps.claims import is_realtime
from bastion.os.apps.launch import INSECURE_LAYERS, AppLauncher, RunningApp, describe_exit
from bastion.os.apps.store import AppStore, InstalledApp
from bastion.os.appservices.services import notify_app_stopped
from bastion.os.appservices.watchdog import WATCHDOG_EVENT, WatchdogService
from bastion.os.reporting.capture import AppExit
from bastion.os.sandbox.errors import SandboxError, SandboxUnavailableError
from bastion.os.sandbox.policy import SandboxLimits, app_uid
from bastion.os.updates.errors import UpdateFailedError
from bastion.os.updates.events import EventQueue

#: How much of an app's log an exit record reads for its traceback and stderr tail.
EXIT_TAIL_BYTES = 8192

__all__ = ["AppLimits", "AppManager", "AppProcess", "app_command"]

_log = logging.getLogger("bastion.os.apps")


@dataclass(frozen=True)
class AppLimits:
    """Bounds and timings of the app manager.

    Attributes:
        log_max_bytes: an app log is rotated (one backup) beyond this.
        restart_initial_s: first restart delay after a crash.
        restart_multiplier: growth of the delay per consecutive crash.
        restart_max_s: ceiling of the delay.
        stable_after_s: an app up this long resets its crash count.
        stop_grace_s: SIGTERM to SIGKILL.
        poll_interval_s: how often the manager looks at its children.
        log_tail_chars: how much of the log tail goes into an ``app_failed`` event.
    """

    log_max_bytes: int = 256 * 1024
    restart_initial_s: float = 1.0
    restart_multiplier: float = 2.0
    restart_max_s: float = 300.0
    stable_after_s: float = 60.0
    stop_grace_s: float = 5.0
    poll_interval_s: float = 1.0
    log_tail_chars: int = 160

    def backoff(self, crashes: int) -> float:
        """Delay before restarting after ``crashes`` consecutive crashes."""
        delay = self.restart_initial_s * self.restart_multiplier ** min(max(crashes - 1, 0), 32)
        return float(min(delay, self.restart_max_s))


def app_command(app: InstalledApp, *, python: str = sys.executable) -> list[str]:
    """The argv that starts ``app``.

    Raises:
        UpdateFailedError: the entry point is missing or leaves the app directory.
    """
    root = app.path.resolve()
    entry = (root / app.manifest.entry_point).resolve()
    if not entry.is_relative_to(root) or not entry.is_file():
        raise UpdateFailedError(f"app {app.component_id}: entry point {app.manifest.entry_point!r} is not in the app")
    if entry.suffix == ".py":
        return [python, "-I", str(entry), *app.manifest.cmd_args]
    if not os.access(entry, os.X_OK):
        raise UpdateFailedError(f"app {app.component_id}: entry point is not executable")
    return [str(entry), *app.manifest.cmd_args]


@dataclass
class AppProcess:
    """The manager's record of one app.

    Attributes:
        app: the installed version it runs.
        run: the current start (process tree, applibs server, sandbox record), if running.
        layers: the sandbox layers of the last start (kept after it stops).
        core: the real-time core of a real-time app.
    """

    app: InstalledApp
    run: RunningApp | None = None
    started_at: dt.datetime | None = None
    crashes: int = 0
    restart_at: dt.datetime | None = None
    failures: list[str] = field(default_factory=list)
    layers: dict[str, Any] = field(default_factory=dict)
    #: The real-time core a ``RealTimeCapable`` app runs on (``None``: the application core).
    core: int | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """Our child process (bubblewrap's monitor when sandboxed), if running."""
        return self.run.tree.process if self.run is not None else None

    def alive(self) -> bool:
        """Whether its process runs."""
        return self.run is not None and self.run.tree.process.poll() is None


class AppManager:
    """Starts, watches, restarts and stops the installed apps.

    Args:
        store: the app store.
        log_dir: where app logs go (``DEV/os-state/apps``).
        data_dir: parent of each app's data directory (``DEV/os-state/app-data``).
        events: the event queue (``app_started``, ``app_failed``, ``sandbox_*``, ``app_denied``).
        limits: bounds and timings.
        python: the interpreter for ``.py`` entry points when not sandboxed.
        services: the OS services the applibs handlers use (``AppServices.mapping``).
        insecure_no_sandbox: run apps without the sandbox (``--insecure-no-sandbox``; loud).
        sandbox_limits: each sandbox's resource bounds.
        bwrap: the bubblewrap executable (default: ``bwrap`` on PATH).
        clock: the time of events recorded from the applibs servers' threads.
    """

    def __init__(
        self,
        store: AppStore,
        *,
        log_dir: Path,
        data_dir: Path,
        events: EventQueue,
        limits: AppLimits | None = None,
        python: str = sys.executable,
        services: Mapping[type, object] | None = None,
        insecure_no_sandbox: bool = False,
        sandbox_limits: SandboxLimits | None = None,
        bwrap: str | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.log_dir = log_dir
        self.data_dir = data_dir
        self._events = events
        self.limits = limits or AppLimits()
        self._python = python
        self._clock = clock
        self._services: Mapping[type, object] = services or {}
        self._apps: dict[str, AppProcess] = {}
        self._lock = threading.RLock()
        self.launcher = AppLauncher(
            services=services if services is not None else {},  # the live mapping: services added later count
            record=lambda app, kind, detail: self._record(self._clock(), kind, app, detail),
            insecure_no_sandbox=insecure_no_sandbox,
            limits=sandbox_limits,
            bwrap=bwrap,
            python=python,
        )
        if insecure_no_sandbox:
            _log.warning("INSECURE: apps run without a sandbox (--insecure-no-sandbox)")
        #: The application watchdog (set by the runtime); :meth:`poll` kills apps past their deadline.
        self.watchdog: WatchdogService | None = None
        #: Called with each app exit the manager reaps (the failure reporter listens here).
        self.on_exit: Callable[[AppExit, int], None] | None = None
        for directory in (log_dir, data_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def storage_dir(self, component_id: str) -> Path:
        """An app's own data directory."""
        return self.data_dir / component_id

    def log_path(self, component_id: str) -> Path:
        """An app's log file."""
        return self.log_dir / f"{component_id}.log"

    def _rotate(self, path: Path) -> None:
        try:
            if path.stat().st_size <= self.limits.log_max_bytes:
                return
            shutil.copyfile(path, path.with_suffix(".log.1"))
            os.truncate(path, 0)  # the app appends (O_APPEND) and carries on at the new end
        except OSError:
            return

    def _uid(self, component_id: str) -> int:
        taken = frozenset(
            int(r.layers["uid"]) for cid, r in self._apps.items() if cid != component_id and "uid" in r.layers
        )
        return app_uid(component_id, taken)

    def _spawn(self, record: AppProcess, now: dt.datetime) -> None:
        app = record.app
        if is_realtime(app.manifest):
            record.core = self.store.core_of(app.component_id)
            if record.core is None:  # more real-time apps than cores (the install would refuse this now)
                record.run, record.restart_at = None, None
                record.layers = {"sandbox": "not started", "missing": "a free real-time core"}
                self._record(now, "app_failed", app, "no free real-time core for this real-time app")
                _log.error("app %s not started: no free real-time core", app.component_id)
                return
        try:
            argv = app_command(app, python=self._python)
            self.storage_dir(app.component_id).mkdir(mode=0o700, exist_ok=True)
            log = self.log_path(app.component_id)
            self._rotate(log)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                record.run = self.launcher.launch(
                    app,
                    argv=argv,
                    storage_dir=self.storage_dir(app.component_id),
                    output=fd,
                    uid=self._uid(app.component_id),
                )
            finally:
                os.close(fd)
        except SandboxUnavailableError as exc:
            record.run, record.restart_at = None, None  # not retried: the host must be fixed first
            record.layers = {"sandbox": "unavailable", "missing": exc.missing, "fix": exc.fix}
            self._record(now, "sandbox_unavailable", app, str(exc))
            _log.error("app %s not started: %s", app.component_id, exc)
            return
        except (OSError, ValueError, UpdateFailedError, SandboxError) as exc:  # ValueError: a policy refused
            record.run = None
            record.crashes += 1
            record.restart_at = now + dt.timedelta(seconds=self.limits.backoff(record.crashes))
            detail = f"cannot start: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            self._record(now, "app_failed", app, detail)
            _log.warning("app %s %s: %s", app.component_id, app.version, detail)
            return
        record.started_at, record.restart_at = now, None
        record.layers = record.run.session.layers()
        self._record(now, "app_started", app, f"pid {record.run.tree.pid}")
        _log.info("started app %s %s (pid %d, %s)", app.component_id, app.version, record.run.tree.pid, _kind(record))

    def _record(self, now: dt.datetime, kind: str, app: InstalledApp, detail: str) -> None:
        self._events.record(
            at=int(now.timestamp()), kind=kind, component_id=app.component_id, version=app.version, detail=detail
        )

    def start_all(self, now: dt.datetime) -> None:
        """Start every installed app that is not running."""
        with self._lock:
            for app in self.store.installed():
                record = self._apps.get(app.component_id)
                if record is None or not record.alive():
                    if record is not None:
                        self._end(record)
                    self._apps[app.component_id] = AppProcess(app)
                    self._spawn(self._apps[app.component_id], now)

    def restart(self, component_id: str, now: dt.datetime) -> None:
        """Stop one app (if running) and start its current version; the others are untouched."""
        with self._lock:
            self.stop(component_id)
            app = self.store.get(component_id)
            if app is None:
                self._apps.pop(component_id, None)
                return
            self._apps[component_id] = AppProcess(app)
            self._spawn(self._apps[component_id], now)

    def _end(self, record: AppProcess) -> None:
        """Stop the app's sandbox (if it runs), check nothing of it is left, close its socket."""
        run, record.run = record.run, None
        if run is None:
            return
        survivors = run.tree.stop(self.limits.stop_grace_s)
        record.layers = run.session.layers()
        run.close()
        notify_app_stopped(self._services, record.app.component_id)
        if survivors:
            detail = f"{len(survivors)} processes outlived the app's stop and were killed"
            self._record(self._clock(), "sandbox_violation", record.app, detail)
            _log.error("app %s: %s", record.app.component_id, detail)

    def stop(self, component_id: str) -> None:
        """Stop one app."""
        with self._lock:
            record = self._apps.get(component_id)
            if record is not None:
                self._end(record)

    def stop_all(self) -> None:
        """Stop every app (on OS exit)."""
        with self._lock:
            for record in self._apps.values():
                self._end(record)
            self.launcher.close()

    def poll(self, now: dt.datetime) -> dt.datetime:
        """Reap crashed apps, record them, restart those whose backoff has passed.

        Returns:
            When to poll next (a scheduler job).
        """
        with self._lock:
            self._watchdog_expired(now)
            for record in self._apps.values():
                run = record.run
                if run is not None:
                    self._rotate(self.log_path(record.app.component_id))
                    code = run.tree.process.poll()
                    if code is None:
                        record.layers = run.session.layers()
                        if (
                            record.started_at
                            and (now - record.started_at).total_seconds() >= self.limits.stable_after_s
                        ):
                            record.crashes = 0
                        continue
                    self._crashed(record, code, now)
                elif record.restart_at is not None and record.restart_at <= now:
                    self._spawn(record, now)
        return now + dt.timedelta(seconds=self.limits.poll_interval_s)

    def _watchdog_expired(self, now: dt.datetime) -> None:
        """Kill each app past its watchdog deadline; it restarts with the normal backoff."""
        if self.watchdog is None:
            return
        for component_id in self.watchdog.expired(now):
            deadline = self.watchdog.deadline(component_id)
            self.watchdog.disarm(component_id)
            record = self._apps.get(component_id)
            if record is None or record.run is None or not record.alive() or deadline is None:
                continue
            if record.started_at is not None and deadline.armed_at < record.started_at:
                continue  # armed by an earlier run of the app
            record.run.tree.stop(0.0)  # no grace: a hung app may ignore SIGTERM
            self._end(record)  # checks that nothing of it is left, closes its applibs socket
            record.crashes += 1
            record.restart_at = now + dt.timedelta(seconds=self.limits.backoff(record.crashes))
            how = f"missed its {deadline.timeout_s:g} s watchdog deadline"
            record.failures.append("watchdog")
            self._record(
                now, WATCHDOG_EVENT, record.app, f"{how} (due {deadline.due.isoformat(timespec='seconds')}); killed"
            )
            _log.warning("app %s %s; killed, restarting at %s", component_id, how, record.restart_at)

    def _crashed(self, record: AppProcess, code: int, now: dt.datetime) -> None:
        sandboxed = record.run is not None and record.run.sandboxed
        self._end(record)
        if self.on_exit is not None:
            uptime = int((now - record.started_at).total_seconds()) if record.started_at else None
            ended = AppExit(
                component_id=record.app.component_id,
                version=record.app.version,
                code=code,
                sandboxed=sandboxed,
                uptime_s=max(uptime, 0) if uptime is not None else None,
                stderr_tail=self._tail(record.app.component_id, EXIT_TAIL_BYTES, flatten=False),
                app_root=None if sandboxed else str(record.app.path),
            )
            self.on_exit(ended, int(now.timestamp()))
        record.crashes += 1
        record.restart_at = now + dt.timedelta(seconds=self.limits.backoff(record.crashes))
        how, violation = describe_exit(code, sandboxed=sandboxed)
        detail = f"{how}; {self._tail(record.app.component_id)}".strip("; ")
        record.failures.append(how)
        if violation:
            self._record(now, "sandbox_violation", record.app, f"killed by the seccomp filter ({how})")
        self._record(now, "app_failed", record.app, detail)
        _log.warning("app %s exited (%s); restarting at %s", record.app.component_id, how, record.restart_at)

    def _tail(self, component_id: str, limit: int | None = None, *, flatten: bool = True) -> str:
        limit = self.limits.log_tail_chars if limit is None else limit
        try:
            with self.log_path(component_id).open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(size - limit, 0))
                text = handle.read(limit).decode("utf-8", "replace")
        except OSError:
            return ""
        return text.strip().replace("\n", " | ") if flatten else text

    def running(self) -> dict[str, int]:
        """Component ID -> pid of every running app (bubblewrap's monitor when sandboxed)."""
        with self._lock:
            return {cid: r.run.tree.pid for cid, r in self._apps.items() if r.run is not None and r.alive()}

    def layers(self, component_id: str) -> dict[str, Any]:
        """The sandbox layers of an app's current (or last) start."""
        with self._lock:
            record = self._apps.get(component_id)
            if record is None:
                return {}
            if record.run is not None:
                record.layers = record.run.session.layers()
            layers = dict(record.layers)
            if record.core is not None:
                layers["realtime_core"] = record.core
            return layers

    def all_layers(self) -> dict[str, dict[str, Any]]:
        """Component ID -> sandbox layers of every app the manager has started (or tried to)."""
        with self._lock:
            return {cid: self.layers(cid) for cid in sorted(self._apps)}

    def status(self) -> list[dict[str, object]]:
        """One row per known app: id, version, pid, crashes, next restart, sandbox layers."""
        with self._lock:
            return [
                {
                    "component_id": cid,
                    "version": r.app.version,
                    "name": r.app.manifest.name,
                    "pid": r.run.tree.pid if r.run is not None and r.alive() else None,
                    "crashes": r.crashes,
                    "restart_at": r.restart_at.isoformat() if r.restart_at else None,
                    "sandbox": self.layers(cid),
                }
                for cid, r in sorted(self._apps.items())
            ]


def _kind(record: AppProcess) -> str:
    return "sandboxed" if record.run is not None and record.run.sandboxed else str(INSECURE_LAYERS["sandbox"])
