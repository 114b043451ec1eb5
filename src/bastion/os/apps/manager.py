"""The app manager: runs each installed app as a child process of the OS.

For each installed app it starts the manifest's ``EntryPoint`` (a ``.py`` entry
runs under this interpreter in isolated mode, ``-I``; anything else must be an
executable file inside the app) with ``CmdArgs``, ``cwd`` = the app's version
directory, a minimal environment, and stdout/stderr appended to
``DEV/os-state/apps/<component_id>.log`` (rotated at a bound). A crashed app is
recorded (``app_failed``) and restarted with exponential backoff; an app that
stayed up long enough starts again from the initial delay. On OS exit every app
is stopped (SIGTERM to its process group, then SIGKILL).

**No sandbox yet.** Apps run as plain child processes with the OS's user and a
minimal environment; bubblewrap, Landlock, seccomp and capability enforcement
come with the compartmentalization issue (DESIGN.md, "What comes after").

The environment an app gets: ``PATH``, ``LANG``, ``TZ`` if set, and
``BASTION_APP_COMPONENT_ID``, ``BASTION_APP_VERSION``, ``BASTION_APP_STORAGE``
(its own data directory, ``DEV/os-state/app-data/<component_id>/``, one per
component ID so it survives reboots and app updates; MutableStorage,
:mod:`bastion.os.appservices.storage`). Deferral requests go through applibs
(:mod:`bastion.os.appservices.sysevent`), not a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bastion.os.apps.store import AppStore, InstalledApp
from bastion.os.appservices.watchdog import WATCHDOG_EVENT, WatchdogService
from bastion.os.updates.errors import UpdateFailedError
from bastion.os.updates.events import EventQueue

__all__ = ["AppLimits", "AppManager", "AppProcess", "app_command"]

_ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "TZ")

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
    """The manager's record of one app."""

    app: InstalledApp
    process: subprocess.Popen[bytes] | None = None
    started_at: dt.datetime | None = None
    crashes: int = 0
    restart_at: dt.datetime | None = None
    failures: list[str] = field(default_factory=list)


class AppManager:
    """Starts, watches, restarts and stops the installed apps.

    Args:
        store: the app store.
        log_dir: where app logs go (``DEV/os-state/apps``).
        data_dir: parent of each app's data directory (``DEV/os-state/app-data``).
        events: the event queue (``app_started``, ``app_failed``).
        limits: bounds and timings.
        python: the interpreter for ``.py`` entry points.
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
    ) -> None:
        self.store = store
        self.log_dir = log_dir
        self.data_dir = data_dir
        self._events = events
        self.limits = limits or AppLimits()
        self._python = python
        self._apps: dict[str, AppProcess] = {}
        self._lock = threading.RLock()
        #: The application watchdog (set by the runtime); :meth:`poll` kills apps past their deadline.
        self.watchdog: WatchdogService | None = None
        for directory in (log_dir, data_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def storage_dir(self, component_id: str) -> Path:
        """An app's own data directory."""
        return self.data_dir / component_id

    def log_path(self, component_id: str) -> Path:
        """An app's log file."""
        return self.log_dir / f"{component_id}.log"

    def _env(self, app: InstalledApp) -> dict[str, str]:
        env = {name: os.environ[name] for name in _ENV_ALLOWLIST if name in os.environ}
        env.update(
            {
                "BASTION_APP_COMPONENT_ID": app.component_id,
                "BASTION_APP_VERSION": app.version,
                "BASTION_APP_STORAGE": str(self.storage_dir(app.component_id)),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        return env

    def _rotate(self, path: Path) -> None:
        try:
            if path.stat().st_size <= self.limits.log_max_bytes:
                return
            shutil.copyfile(path, path.with_suffix(".log.1"))
            os.truncate(path, 0)  # the app appends (O_APPEND) and carries on at the new end
        except OSError:
            return

    def _spawn(self, record: AppProcess, now: dt.datetime) -> None:
        app = record.app
        try:
            argv = app_command(app, python=self._python)
            self.storage_dir(app.component_id).mkdir(mode=0o700, exist_ok=True)
            log = self.log_path(app.component_id)
            self._rotate(log)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                record.process = subprocess.Popen(
                    argv,
                    cwd=app.path,
                    env=self._env(app),
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=fd,
                    start_new_session=True,  # its own process group: stopped as a whole
                    close_fds=True,
                )
            finally:
                os.close(fd)
        except (OSError, UpdateFailedError) as exc:
            record.process = None
            record.crashes += 1
            record.restart_at = now + dt.timedelta(seconds=self.limits.backoff(record.crashes))
            detail = str(exc) if isinstance(exc, UpdateFailedError) else f"cannot start: {exc.strerror or exc}"
            self._record(now, "app_failed", app, detail)
            _log.warning("app %s %s: %s", app.component_id, app.version, detail)
            return
        record.started_at, record.restart_at = now, None
        self._record(now, "app_started", app, f"pid {record.process.pid}")
        _log.info("started app %s %s (pid %d)", app.component_id, app.version, record.process.pid)

    def _record(self, now: dt.datetime, kind: str, app: InstalledApp, detail: str) -> None:
        self._events.record(
            at=int(now.timestamp()), kind=kind, component_id=app.component_id, version=app.version, detail=detail
        )

    def start_all(self, now: dt.datetime) -> None:
        """Start every installed app that is not running."""
        with self._lock:
            for app in self.store.installed():
                record = self._apps.get(app.component_id)
                if record is None or record.process is None or record.process.poll() is not None:
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

    def _terminate(self, record: AppProcess) -> None:
        process = record.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(self.limits.stop_grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            process.wait()

    def stop(self, component_id: str) -> None:
        """Stop one app."""
        with self._lock:
            record = self._apps.get(component_id)
            if record is not None:
                self._terminate(record)
                record.process = None

    def stop_all(self) -> None:
        """Stop every app (on OS exit)."""
        with self._lock:
            for record in self._apps.values():
                self._terminate(record)
                record.process = None

    def poll(self, now: dt.datetime) -> dt.datetime:
        """Reap crashed apps, record them, restart those whose backoff has passed.

        Returns:
            When to poll next (a scheduler job).
        """
        with self._lock:
            self._watchdog_expired(now)
            for record in self._apps.values():
                process = record.process
                if process is not None:
                    self._rotate(self.log_path(record.app.component_id))
                    code = process.poll()
                    if code is None:
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
            process = record.process if record is not None else None
            if record is None or process is None or process.poll() is not None or deadline is None:
                continue
            if record.started_at is not None and deadline.armed_at < record.started_at:
                continue  # armed by an earlier run of the app
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # a hung app may ignore SIGTERM
            process.wait()
            record.process = None
            record.crashes += 1
            record.restart_at = now + dt.timedelta(seconds=self.limits.backoff(record.crashes))
            how = f"missed its {deadline.timeout_s:g} s watchdog deadline"
            record.failures.append("watchdog")
            self._record(
                now, WATCHDOG_EVENT, record.app, f"{how} (due {deadline.due.isoformat(timespec='seconds')}); killed"
            )
            _log.warning("app %s %s; killed, restarting at %s", component_id, how, record.restart_at)

    def _crashed(self, record: AppProcess, code: int, now: dt.datetime) -> None:
        record.process = None
        record.crashes += 1
        record.restart_at = now + dt.timedelta(seconds=self.limits.backoff(record.crashes))
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        detail = f"{how}; {self._tail(record.app.component_id)}".strip("; ")
        record.failures.append(how)
        self._record(now, "app_failed", record.app, detail)
        _log.warning("app %s exited (%s); restarting at %s", record.app.component_id, how, record.restart_at)

    def _tail(self, component_id: str) -> str:
        limit = self.limits.log_tail_chars
        try:
            with self.log_path(component_id).open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(size - limit, 0))
                return handle.read(limit).decode("utf-8", "replace").strip().replace("\n", " | ")
        except OSError:
            return ""

    def running(self) -> dict[str, int]:
        """Component ID -> pid of every running app."""
        with self._lock:
            return {
                cid: r.process.pid
                for cid, r in self._apps.items()
                if r.process is not None and r.process.poll() is None
            }

    def status(self) -> list[dict[str, object]]:
        """One row per known app: id, version, pid, crashes, next restart."""
        with self._lock:
            return [
                {
                    "component_id": cid,
                    "version": r.app.version,
                    "name": r.app.manifest.name,
                    "pid": r.process.pid if r.process is not None and r.process.poll() is None else None,
                    "crashes": r.crashes,
                    "restart_at": r.restart_at.isoformat() if r.restart_at else None,
                }
                for cid, r in sorted(self._apps.items())
            ]
