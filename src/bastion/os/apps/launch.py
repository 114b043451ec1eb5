"""Start one app: its applibs socket and server, then its sandbox (or, insecurely, a plain child).

For each start the launcher makes a SOCK_SEQPACKET socketpair, serves the OS
end with an :class:`~bastion.os.appservices.server.AppServer` (the choke point)
and passes the app end in as fd 3. Sandboxed, the app runs under bubblewrap
with the seccomp filter, behind the launcher shim that applies Landlock and the
rlimits and says ``sandbox.hello``. With ``insecure_no_sandbox`` it runs as a
plain child process (still with its socket) and its layers say so.

The sandbox features are probed once (:func:`bastion.os.sandbox.probe.probe`);
a missing one raises :class:`SandboxUnavailableError` and no app starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.os.apps.store import InstalledApp
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.sandbox_ops import SandboxSession
from bastion.os.appservices.server import AppServer
from bastion.os.sandbox.cgroups import AppCgroup, AppCgroups
from bastion.os.sandbox.policy import (
    HostRuntime,
    SandboxLimits,
    SandboxPolicy,
    build_policy,
    bwrap_command,
    host_runtime,
    shim_argv,
)
from bastion.os.sandbox.probe import SandboxFeatures, probe
from bastion.os.sandbox.process import AppProcessTree, Spawner
from bastion.os.sandbox.seccomp import SECCOMP_KILLED_EXIT, bpf_memfd

__all__ = ["INSECURE_LAYERS", "AppLauncher", "RunningApp", "describe_exit"]

#: The layers of an app started under ``--insecure-no-sandbox``.
INSECURE_LAYERS: dict[str, Any] = {"sandbox": "none (insecure-no-sandbox)"}

#: Processes of bubblewrap itself in the sandbox's cgroup (its monitor and the namespace's init).
_BWRAP_PROCESSES = 2

_log = logging.getLogger("bastion.os.apps")


def describe_exit(code: int, *, sandboxed: bool) -> tuple[str, bool]:
    """How an app ended, and whether the seccomp filter killed it.

    Bubblewrap's init exits with ``128 + signal`` when the app dies by a signal,
    so a sandboxed ``159`` is SIGSYS: the filter killed the app.
    """
    if code < 0:
        return f"signal {-code}", False
    if sandboxed and code > 128:
        signum = code - 128
        if code == SECCOMP_KILLED_EXIT:
            return f"signal {signum} (SIGSYS: a syscall the sandbox forbids)", True
        return f"signal {signum}", False
    return f"exit code {code}", False


@dataclass
class RunningApp:
    """One start of one app: its process tree, applibs server and sandbox record."""

    tree: AppProcessTree
    server: AppServer
    session: SandboxSession
    cgroup: AppCgroup | None = None

    @property
    def sandboxed(self) -> bool:
        """Whether it runs in a bubblewrap sandbox."""
        return self.tree.pid_namespace is not None

    def close(self) -> None:
        """Stop serving its socket and remove its cgroup (after the process tree ended)."""
        self.server.close()
        if self.cgroup is not None:
            self.cgroup.remove()


class AppLauncher:
    """Builds and starts app sandboxes.

    Args:
        services: the OS services the applibs handlers use.
        record: ``record(app, kind, detail)`` writes an event for an app.
        insecure_no_sandbox: run apps as plain child processes (``--insecure-no-sandbox``).
        limits: each sandbox's resource bounds.
        bwrap: the bubblewrap executable (default: ``bwrap`` on PATH).
        python: the interpreter of ``.py`` entry points when not sandboxed.
    """

    def __init__(
        self,
        *,
        services: Mapping[type, object],
        record: Callable[[InstalledApp, str, str], None],
        insecure_no_sandbox: bool = False,
        limits: SandboxLimits | None = None,
        bwrap: str | None = None,
        python: str,
    ) -> None:
        self.services = services
        self.insecure_no_sandbox = insecure_no_sandbox
        self.limits = limits or SandboxLimits()
        self._record = record
        self._bwrap = bwrap
        self._python = python
        self._features: SandboxFeatures | None = None
        self._runtime: HostRuntime | None = None
        self._spawner = Spawner()
        self._cgroup_tree: AppCgroups | None = None
        self._lock = threading.Lock()

    def features(self) -> SandboxFeatures:
        """The host's sandbox features (probed once; a failure is probed again next time).

        Raises:
            SandboxUnavailableError: a required feature is missing.
        """
        with self._lock:
            if self._features is None:
                self._features = probe(bwrap=self._bwrap)
                self._runtime = host_runtime()
                if self._features.landlock_missing:
                    _log.warning("apps run without Landlock: %s", self._features.landlock_missing)
            return self._features

    def launch(self, app: InstalledApp, *, argv: list[str], storage_dir: Path, output: int, uid: int) -> RunningApp:
        """Start ``app`` (``argv`` is its plain command, used only when not sandboxed).

        Raises:
            SandboxUnavailableError: the sandbox cannot be built on this host.
            SandboxStartError: bubblewrap failed before the app ran.
            OSError: the process could not be started.
        """
        features = None if self.insecure_no_sandbox else self.features()
        policy = None if features is None else self._policy(app, storage_dir, uid)
        cgroup = None
        if policy is None:
            session = SandboxSession(INSECURE_LAYERS, expect_hello=False)
        else:
            cgroup = self._cgroups().create(
                app.component_id,
                pids_max=policy.limits.nproc + _BWRAP_PROCESSES,
                memory_bytes=policy.limits.memory_bytes,
            )
            missing = self._cgroups().missing or "it could not be made (see the OS log)"
            cgroup_layer = cgroup.to_json() if cgroup is not None else f"none: {missing}"
            session = SandboxSession(
                {"sandbox": "bubblewrap", **policy.to_json(), "cgroup": cgroup_layer}, expect_hello=True
            )
        os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server: AppServer | None = None
        try:
            server = self._serve(app, storage_dir, session, os_end)
            if features is None or policy is None:
                env = _plain_env(app, storage_dir, app_end.fileno())
                tree = self._spawner.plain(argv, cwd=str(app.path), env=env, pass_fds=[app_end.fileno()], output=output)
            else:
                tree = self._sandboxed(features, policy, cgroup, app_end.fileno(), output)
        except BaseException:
            if server is not None:
                server.close()
            else:
                os_end.close()
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            app_end.close()
        return RunningApp(tree, server, session, cgroup)

    def _policy(self, app: InstalledApp, storage_dir: Path, uid: int) -> SandboxPolicy:
        return build_policy(
            component_id=app.component_id,
            version=app.version,
            manifest=app.manifest,
            app_dir=app.path,
            storage_dir=storage_dir,
            uid=uid,
            runtime=self._runtime or host_runtime(),
            limits=self.limits,
        )

    def _serve(self, app: InstalledApp, storage_dir: Path, session: SandboxSession, sock: socket.socket) -> AppServer:
        ctx = AppContext(
            component_id=app.component_id,
            version=app.version,
            manifest=app.manifest,
            storage_dir=storage_dir,
            services={**self.services, SandboxSession: session},
            record=lambda kind, detail: self._record(app, kind, detail),
        )
        server = AppServer(ctx, sock)
        session.request_count = lambda: server.requests
        server.start()
        return server

    def _cgroups(self) -> AppCgroups:
        with self._lock:
            if self._cgroup_tree is None:
                self._cgroup_tree = AppCgroups()
                if self._cgroup_tree.missing:
                    _log.info("app sandboxes get no cgroup: %s", self._cgroup_tree.missing)
            return self._cgroup_tree

    def _sandboxed(
        self,
        features: SandboxFeatures,
        policy: SandboxPolicy,
        cgroup: AppCgroup | None,
        applibs_fd: int,
        output: int,
    ) -> AppProcessTree:
        seccomp_fd = bpf_memfd(features.seccomp_bpf)
        info_read, info_write = os.pipe()
        try:
            cmd = bwrap_command(policy, seccomp_fd=seccomp_fd, info_fd=info_write, program=features.bwrap)
            argv = cmd.argv(shim_argv(policy, applibs_fd=applibs_fd))
            if cgroup is not None:
                argv = cgroup.wrap(argv)
            return self._spawner.sandboxed(
                argv, pass_fds=[*cmd.fds, applibs_fd], info_read=info_read, info_write=info_write, output=output
            )
        finally:
            for fd in (seccomp_fd, info_read):  # the spawner closes info_write once bubblewrap has it
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        """End the spawner thread (call once every app is stopped)."""
        self._spawner.close()


def _plain_env(app: InstalledApp, storage_dir: Path, applibs_fd: int) -> dict[str, str]:
    env = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TZ") if name in os.environ}
    env.update(
        {
            "BASTION_APP_COMPONENT_ID": app.component_id,
            "BASTION_APP_VERSION": app.version,
            "BASTION_APP_STORAGE": str(storage_dir),
            "BASTION_APPLIBS_FD": str(applibs_fd),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env
