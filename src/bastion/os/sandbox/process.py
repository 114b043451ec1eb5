"""Start and stop one app process tree: a bubblewrap sandbox, or a plain child under ``--insecure-no-sandbox``.

A sandbox is bubblewrap's monitor process (our child, in the OS's pid
namespace), whose child is the init (pid 1) of the app's own pid namespace.
Stopping sends SIGTERM to every app process in that namespace, waits the grace
period, then SIGKILLs the init: the kernel then kills everything left in the
namespace. Afterwards the OS looks for any process still in the namespace and
reports (and kills) it, so no process of an app outlives its stop.

All spawns go through one long-lived thread (:class:`Spawner`): bubblewrap's
``--die-with-parent`` fires when the *thread* that started it ends, so an app
started from a short-lived request thread would die with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bastion.os.sandbox.errors import SandboxStartError

__all__ = ["INFO_MAX_BYTES", "INFO_TIMEOUT_S", "AppProcessTree", "Spawner", "pids_in_namespace", "read_bwrap_info"]

#: Bounds on bubblewrap's info JSON and on the wait for it.
INFO_MAX_BYTES = 4096
INFO_TIMEOUT_S = 10.0
#: How long to wait for the namespace to empty after SIGKILL of its init.
KILL_WAIT_S = 5.0


def _stat_fields(proc: Path) -> list[str]:
    """``/proc/PID/stat`` after the command name: state, ppid, pgrp, session, ..."""
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()


def pids_in_namespace(pid_namespace: int) -> list[int]:
    """Host pids of every live (not zombie) process whose pid namespace has inode ``pid_namespace``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if (entry / "ns" / "pid").stat().st_ino == pid_namespace and _stat_fields(entry)[0] != "Z":
                    found.append(int(entry.name))
    return found


def _session_members(sid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = _stat_fields(entry)
                if int(fields[3]) == sid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def read_bwrap_info(fd: int, timeout: float) -> dict[str, object]:
    """Bubblewrap's ``--info-fd`` JSON (``child-pid``, ``pid-namespace``...), read as it arrives.

    Raises:
        SandboxStartError: it did not come in ``timeout`` seconds, or bubblewrap exited first.
    """
    data = b""
    while len(data) <= INFO_MAX_BYTES:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise SandboxStartError("bubblewrap did not report its sandbox in time")
        chunk = os.read(fd, INFO_MAX_BYTES)
        if not chunk:
            break
        data += chunk
        with contextlib.suppress(ValueError):
            value = json.loads(data)
            if isinstance(value, dict):
                return value
    raise SandboxStartError("bubblewrap exited before the sandbox was set up")


def _pin_namespace(init_pid: int, namespace: int, monitor_pid: int) -> int | None:
    """An fd on the sandbox's pid namespace, or ``None`` if its init is already gone.

    The kernel reuses a pid namespace's inode number once the namespace is freed,
    so after an app ends another app's new namespace can carry the same number:
    the stop would then take that app's processes for survivors and kill them.
    Holding the namespace open keeps its number ours until the stop is done. The
    init must still be the child of our bubblewrap monitor (its pid not reused)
    and the namespace the one bubblewrap reported.
    """
    proc = Path(f"/proc/{init_pid}")
    try:
        if int(_stat_fields(proc)[1]) != monitor_pid:
            return None
        fd = os.open(proc / "ns" / "pid", os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, ValueError, IndexError):
        return None
    try:
        if os.fstat(fd).st_ino == namespace and int(_stat_fields(proc)[1]) == monitor_pid:
            return fd
    except (OSError, ValueError, IndexError):
        pass
    os.close(fd)
    return None


@dataclass
class AppProcessTree:
    """One running app.

    Attributes:
        process: our child (bubblewrap's monitor, or the app itself when not sandboxed).
        init_pid: host pid of the sandbox's pid 1 (``None`` when not sandboxed).
        pid_namespace: inode of the sandbox's pid namespace (``None`` when not sandboxed).
        namespace_fd: an fd holding that namespace (and so its inode number) until the stop is done;
            ``None`` when not sandboxed, or when the sandbox had already ended when it was started.
    """

    process: subprocess.Popen[bytes]
    init_pid: int | None = None
    pid_namespace: int | None = None
    namespace_fd: int | None = None

    @property
    def pid(self) -> int:
        """Our child's pid."""
        return self.process.pid

    def members(self) -> list[int]:
        """Host pids of every process of the app still alive (the bubblewrap processes included)."""
        if self.pid_namespace is not None:
            if self.namespace_fd is None:
                return []  # it ended before it could be pinned: its init took every process with it
            return pids_in_namespace(self.pid_namespace)
        return _session_members(self.process.pid)

    def stop(self, grace_s: float) -> list[int]:
        """SIGTERM the app's processes, SIGKILL what is left after ``grace_s``; reap our child.

        Returns:
            Pids found alive after the stop (then killed): empty when the stop was clean.
        """
        if self.process.poll() is None:
            self._signal_app(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._kill()
                self.process.wait()
        try:
            return self._verify()
        finally:
            self.release()

    def release(self) -> None:
        """Let the namespace go (after the stop: its inode number may then be reused)."""
        fd, self.namespace_fd = self.namespace_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _signal_app(self, signum: int) -> None:
        if self.pid_namespace is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)
            return
        for pid in self.members():
            if pid != self.init_pid:  # the init ignores SIGTERM from outside; it ends when the app does
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.init_pid is not None:
                os.kill(self.init_pid, signal.SIGKILL)  # the kernel kills the whole pid namespace with it
            else:
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def _verify(self) -> list[int]:
        # bubblewrap's monitor exits as soon as the init has reported; the init (and with it the
        # namespace) ends a moment later. Anything still alive after KILL_WAIT_S outlived the stop.
        deadline = time.monotonic() + KILL_WAIT_S
        survivors = self.members()
        while survivors and time.monotonic() < deadline:
            time.sleep(0.01)
            survivors = self.members()
        if not survivors:
            return []
        self._kill()
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        # SIGKILL is not instant: a process tearing down (an io_uring ring, a big address space)
        # stays visible for a while. Wait for the kill to land, so that a stop that returns has
        # left nothing behind.
        deadline = time.monotonic() + KILL_WAIT_S
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.01)
        return survivors


class Spawner:
    """Starts app processes from one long-lived thread (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="app-spawner")
            return self._executor

    def sandboxed(
        self, argv: list[str], *, pass_fds: list[int], info_read: int, info_write: int, output: int
    ) -> AppProcessTree:
        """Start bubblewrap and wait until it reports the sandbox (``--info-fd info_write``, closed here).

        Raises:
            OSError: bubblewrap could not be executed.
            SandboxStartError: it failed before the sandbox was set up.
        """
        try:
            process = self._pool().submit(self._popen, argv, pass_fds, output, {}).result()
        finally:
            os.close(info_write)  # ours: bubblewrap holds its own copy, so its end is our EOF
        try:
            info = read_bwrap_info(info_read, INFO_TIMEOUT_S)
        except SandboxStartError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
            raise
        init_pid, namespace = info.get("child-pid"), info.get("pid-namespace")
        if not isinstance(init_pid, int) or not isinstance(namespace, int):
            process.kill()
            process.wait()
            raise SandboxStartError("bubblewrap reported no child pid or pid namespace")
        return AppProcessTree(process, init_pid, namespace, _pin_namespace(init_pid, namespace, process.pid))

    def plain(
        self, argv: list[str], *, cwd: str, env: dict[str, str], pass_fds: list[int], output: int
    ) -> AppProcessTree:
        """Start the app as a plain child in its own session (``--insecure-no-sandbox``)."""
        return AppProcessTree(self._pool().submit(self._popen, argv, pass_fds, output, env, cwd).result())

    @staticmethod
    def _popen(
        argv: list[str], pass_fds: list[int], output: int, env: dict[str, str], cwd: str | None = None
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            pass_fds=pass_fds,
            start_new_session=True,
            close_fds=True,
        )

    def close(self) -> None:
        """End the spawner thread (only once no app it started runs: they would die with it)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
