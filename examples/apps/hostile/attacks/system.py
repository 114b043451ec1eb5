"""Attacks on the system's settings and the app's own bounds: /proc/sys, rlimits, uids, device nodes.

None of these kill the app: the sandbox's ``/proc/sys`` is read-only,
raising a hard rlimit needs a capability the app does not have (it has
none), uid 0 is not mapped in its user namespace, and ``/dev`` holds only
null, zero, full, random, urandom and a tty it cannot open.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

from attacks import Context, Outcome, attack, read_file, try_each, write_file
from attacks.syscalls import check, libc

__all__: list[str] = []

_PROC_WRITES = (
    "/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
    "/proc/sys/kernel/modprobe", "/proc/sysrq-trigger", "/proc/self/oom_score_adj", "/proc/self/uid_map",
    "/proc/self/setgroups", "/proc/1/oom_score_adj",
)  # fmt: skip
_RLIMITS = {
    "nproc": resource.RLIMIT_NPROC,
    "as": resource.RLIMIT_AS,
    "nofile": resource.RLIMIT_NOFILE,
    "fsize": resource.RLIMIT_FSIZE,
    "core": resource.RLIMIT_CORE,
}
_DEVICES = ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/ptmx",
            "/dev/tty", "/dev/console", "/dev/fuse", "/dev/net/tun", "/dev/kvm")  # fmt: skip


@attack("proc_sys_write")
def proc_sys_write(ctx: Context) -> Outcome:
    """Kernel settings (core_pattern runs a program as root!), sysrq, its own OOM score and uid map."""
    del ctx
    return try_each([(f"write {p}", lambda p=p: write_file(p, b"1")) for p in _PROC_WRITES])


@attack("rlimits_up")
def rlimits_up(ctx: Context) -> Outcome:
    """Raise every rlimit the sandbox set (hard limit to infinity, soft above hard)."""
    del ctx
    attempts: list[tuple[str, Callable[[], object]]] = []
    for name, which in _RLIMITS.items():
        _, hard = resource.getrlimit(which)
        attempts.append((f"{name} hard", lambda w=which: resource.setrlimit(w, (-1, -1))))
        if hard != resource.RLIM_INFINITY:
            attempts.append((f"{name} soft", lambda w=which, h=hard: resource.setrlimit(w, (h + 1, h))))
            attempts.append((f"{name} +1", lambda w=which, h=hard: resource.setrlimit(w, (h + 1, h + 1))))
    attempts.append(("prlimit of init", lambda: resource.prlimit(1, resource.RLIMIT_NPROC, (-1, -1))))
    return try_each(attempts)


@attack("become_root")
def become_root(ctx: Context) -> Outcome:
    """setuid(0), setgid(0), setgroups, ambient capabilities, a new hostname."""
    del ctx
    return try_each(
        [
            ("setuid 0", lambda: os.setuid(0)),
            ("setgid 0", lambda: os.setgid(0)),
            ("setgroups", lambda: os.setgroups([0])),
            ("ambient raise", lambda: check(libc.prctl(47, 2, 21, 0, 0))),  # PR_CAP_AMBIENT_RAISE CAP_SYS_ADMIN
            ("sethostname", lambda: check(libc.sethostname(b"pwned", 5))),
        ]
    )


@attack("dev_nodes")
def dev_nodes(ctx: Context) -> Outcome:
    """Device nodes: memory, disks, the kernel log, terminals, tun, kvm."""
    del ctx
    attempts: list[tuple[str, Callable[[], object]]] = []
    for path in _DEVICES:
        attempts.append((f"open {path}", lambda p=path: os.close(os.open(p, os.O_RDWR))))
    attempts.append(("mknod", lambda: os.mknod("/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1))))
    return try_each(attempts)


@attack("cgroup_escape")
def cgroup_escape(ctx: Context) -> Outcome:
    """Move itself out of its cgroup (and its pids and memory limits)."""
    del ctx
    paths = ("/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs")
    attempts: list[tuple[str, Callable[[], object]]] = [
        (f"write {p}", lambda p=p: write_file(p, str(os.getpid()).encode())) for p in paths
    ]
    attempts.append(("read the release agent", lambda: read_file("/sys/fs/cgroup/release_agent")))
    return try_each(attempts)
