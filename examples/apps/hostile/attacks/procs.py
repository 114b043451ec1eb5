"""Attacks on other processes, and on outliving the app: signals, ``/proc/PID/mem``, ptrace, daemons, bombs.

The pid namespace hides every process outside the sandbox; Landlock (ptrace
and signal scoping) and the uid keep the sandbox's own init out of reach; the
seccomp filter kills ptrace and process_vm_*; the pids cgroup (or
RLIMIT_NPROC) caps a fork bomb; stopping the app kills its whole pid namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
import time
from collections.abc import Callable

from attacks import Context, Outcome, attack, read_file, report, try_each
from attacks.syscalls import check, libc, syscall

__all__: list[str] = []

#: The highest pid the signal sweep tries.
MAX_PID = 4096
#: How many processes a fork bomb tries to make.
BOMB_FORKS = 10_000
#: Marker in the argv of every process the app leaves behind on purpose.
MARKER = "bastion-hostile-"


def _targets(ctx: Context) -> list[int]:
    visible = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return sorted({*visible, *([ctx.os_pid] if ctx.os_pid else [])} - {os.getpid()})


@attack("proc_mem")
def proc_mem(ctx: Context) -> Outcome:
    """Read or write the memory and environment of the OS, of another app, of the sandbox's init."""
    attempts: list[tuple[str, Callable[[], object]]] = []
    for pid in _targets(ctx):
        attempts.append((f"read /proc/{pid}/mem", lambda p=pid: read_file(f"/proc/{p}/mem")))
        attempts.append((f"open /proc/{pid}/mem rw", lambda p=pid: os.open(f"/proc/{p}/mem", os.O_RDWR)))
        attempts.append((f"read /proc/{pid}/environ", lambda p=pid: read_file(f"/proc/{p}/environ")))
        attempts.append((f"readlink /proc/{pid}/fd/1", lambda p=pid: os.readlink(f"/proc/{p}/fd/1").encode()))
    return try_each(attempts)


@attack("kill_pids")
def kill_pids(ctx: Context) -> Outcome:
    """SIGKILL every pid from 1 to MAX_PID (and the OS's host pid), then every process at once (-1)."""
    delivered: list[int] = []
    errors: dict[str, int] = {}
    own = os.getpid()
    for pid in [*range(1, MAX_PID + 1), ctx.os_pid, -1]:
        if pid in (0, own):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            errors[name] = errors.get(name, 0) + 1
        else:
            delivered.append(pid)
    return Outcome(not delivered, ",".join(sorted(errors)), {"delivered": delivered, "errors": errors})


@attack("ptrace_attach", "kill")
def ptrace_attach(ctx: Context) -> Outcome:
    """PTRACE_ATTACH to the sandbox's init (pid 1) or the OS."""
    return try_each([("ptrace attach", lambda: check(libc.ptrace(16, ctx.os_pid or 1, None, None)))])


@attack("process_vm_readv", "kill")
def process_vm_readv(ctx: Context) -> Outcome:
    """Read another process's memory without /proc (process_vm_readv)."""

    class IoVec(ctypes.Structure):
        _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))

    buffer = ctypes.create_string_buffer(64)
    local, remote = IoVec(ctypes.addressof(buffer), 64), IoVec(0x400000, 64)
    pid = ctx.os_pid or 1
    return try_each(
        [
            (
                "process_vm_readv",
                lambda: syscall("process_vm_readv", pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0),
            )
        ]
    )


@attack("pidfd_getfd", "kill")
def pidfd_getfd(ctx: Context) -> Outcome:
    """Steal an fd (the applibs socket, a log) from the sandbox's init through a pidfd."""
    del ctx

    def steal() -> int:
        pidfd = syscall("pidfd_open", 1, 0)
        return syscall("pidfd_getfd", pidfd, 3, 0)

    return try_each([("pidfd_getfd", steal)])


@attack("thread_bomb")
def thread_bomb(ctx: Context) -> Outcome:
    """Start threads until refused (RLIMIT_NPROC and the pids cgroup count threads too); then release them."""
    del ctx
    release = threading.Event()
    threads: list[threading.Thread] = []
    how = "no limit reached"
    try:
        for _ in range(BOMB_FORKS):
            thread = threading.Thread(target=release.wait, daemon=True)
            thread.start()
            threads.append(thread)
    except (RuntimeError, OSError) as exc:
        how = type(exc).__name__
    finally:
        release.set()
        for thread in threads:
            thread.join()
    return Outcome(len(threads) < BOMB_FORKS, how, {"threads": len(threads)})


@attack("fork_bomb", "own")
def fork_bomb(ctx: Context) -> Outcome:
    """Fork until refused, and keep every child alive (they sleep until the app is stopped)."""
    del ctx
    children = 0
    how = "no limit reached"
    try:
        for _ in range(BOMB_FORKS):
            pid = os.fork()
            if pid == 0:
                time.sleep(3600)
                os._exit(0)
            children += 1
    except OSError as exc:
        how = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    report({"attack": "fork_bomb", "blocked": children < BOMB_FORKS, "how": how, "detail": {"children": children}})
    while True:
        time.sleep(60)  # hold the children until the OS stops the app


def _daemon(label: str, *, double_fork: bool, new_session: bool) -> int:
    """Start a child that ignores SIGTERM and runs ``sleep`` under a marked argv; returns its pid."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        if new_session:
            os.setsid()
        if double_fork and os.fork() != 0:
            os._exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SIG_IGN survives exec
        os.write(write_end, str(os.getpid()).encode())
        os.close(write_end)
        os.execv("/bin/sh", [f"{MARKER}{label}", "-c", "trap '' TERM HUP INT; while :; do sleep 1; done"])  # noqa: S606
    os.close(write_end)
    grandchild = int(os.read(read_end, 32) or b"0")
    os.close(read_end)
    if double_fork:
        os.waitpid(pid, 0)
    return grandchild


@attack("daemons", "own")
def daemons(ctx: Context) -> Outcome:
    """Leave processes that try to outlive the stop: a double-forked daemon, a new session, a stubborn child."""
    del ctx
    pids = {
        "double_fork": _daemon("double-fork", double_fork=True, new_session=True),
        "setsid": _daemon("setsid", double_fork=False, new_session=True),
        "stubborn": _daemon("stubborn", double_fork=False, new_session=False),
    }
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # and the app itself ignores SIGTERM
    report({"attack": "daemons", "blocked": None, "how": "spawned; the OS must kill them at stop", "detail": pids})
    while True:
        time.sleep(60)
