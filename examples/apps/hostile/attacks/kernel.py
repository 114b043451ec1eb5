"""Attacks on the kernel's wider surface: mounts, namespaces, bpf, keyrings, perf, terminal injection.

Every one of these is on the seccomp filter's kill list: the app dies by
SIGSYS at the call, and the OS records a ``sandbox_violation``. Each needs its
own app start. Were a call to return instead, its error is reported.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import time

from attacks import Context, Outcome, attack, try_each
from attacks.syscalls import check, libc, syscall

__all__: list[str] = []

_CLONE_NEWNS, _CLONE_NEWUSER, _SIGCHLD = 0x00020000, 0x10000000, 17
_TIOCSTI = 0x5412
_ADDR_NO_RANDOMIZE = 0x0040000


@attack("mount", "kill")
def mount(ctx: Context) -> Outcome:
    """Mount a tmpfs over ``/app`` (or anything: a proc, the host's disk)."""
    del ctx
    return try_each([("mount", lambda: check(libc.mount(b"none", b"/app", b"tmpfs", 0, None)))])


@attack("umount", "kill")
def umount(ctx: Context) -> Outcome:
    """Unmount ``/tmp`` to see what lies under it."""
    del ctx
    return try_each([("umount2", lambda: check(libc.umount2(b"/tmp", 2)))])


@attack("unshare", "kill")
def unshare(ctx: Context) -> Outcome:
    """A new user namespace (where it would have every capability again)."""
    del ctx
    return try_each([("unshare user", lambda: check(libc.unshare(_CLONE_NEWUSER)))])


@attack("clone_namespace", "kill")
def clone_namespace(ctx: Context) -> Outcome:
    """clone(2) with CLONE_NEWUSER|CLONE_NEWNS, the other way to a new namespace."""
    del ctx

    def clone() -> int:
        pid = syscall("clone", _CLONE_NEWUSER | _CLONE_NEWNS | _SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)
        return pid

    return try_each([("clone", clone)])


@attack("setns", "kill")
def setns(ctx: Context) -> Outcome:
    """Join a namespace through an nsfs file (its own: the host's are not visible)."""
    del ctx

    def join() -> int:
        fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
        return check(libc.setns(fd, 0))

    return try_each([("setns", join)])


@attack("chroot", "kill")
def chroot(ctx: Context) -> Outcome:
    """chroot, the classic first step of a chroot escape."""
    del ctx
    return try_each([("chroot", lambda: check(libc.chroot(b"/tmp")))])


@attack("pivot_root", "kill")
def pivot_root(ctx: Context) -> Outcome:
    """pivot_root, to swap the sandbox's root."""
    del ctx
    return try_each([("pivot_root", lambda: syscall("pivot_root", b"/tmp", b"/tmp"))])


@attack("bpf", "kill")
def bpf(ctx: Context) -> Outcome:
    """bpf(2): load programs, read maps."""
    del ctx
    attr = ctypes.create_string_buffer(128)
    return try_each([("bpf map create", lambda: syscall("bpf", 0, attr, 128))])


@attack("keyctl", "kill")
def keyctl(ctx: Context) -> Outcome:
    """The kernel keyrings (shared across namespaces for the same user)."""
    del ctx
    return try_each(
        [
            ("add_key", lambda: syscall("add_key", b"user", b"hostile", b"x", 1, -3)),
            ("keyctl read", lambda: syscall("keyctl", 11, -3, None, 0)),
        ]
    )


@attack("perf_event_open", "kill")
def perf_event_open(ctx: Context) -> Outcome:
    """perf_event_open(2): side channels, kernel pointers."""
    del ctx
    attr = ctypes.create_string_buffer(128)
    return try_each([("perf_event_open", lambda: syscall("perf_event_open", attr, 0, -1, -1, 0))])


@attack("userfaultfd", "kill")
def userfaultfd(ctx: Context) -> Outcome:
    """userfaultfd(2), a favourite of kernel exploits for winning races."""
    del ctx
    return try_each([("userfaultfd", lambda: syscall("userfaultfd", 0))])


@attack("io_uring", "kill")
def io_uring(ctx: Context) -> Outcome:
    """io_uring_setup(2): a second syscall interface that seccomp cannot see into."""
    del ctx
    params = ctypes.create_string_buffer(120)
    return try_each([("io_uring_setup", lambda: syscall("io_uring_setup", 4, params))])


@attack("open_by_handle_at", "kill")
def open_by_handle_at(ctx: Context) -> Outcome:
    """Open a file by handle: the "shocker" escape out of a bind mount."""
    del ctx
    handle = ctypes.create_string_buffer(136)
    ctypes.memmove(handle, (128).to_bytes(4, "little"), 4)
    return try_each([("open_by_handle_at", lambda: syscall("open_by_handle_at", os.open("/app", 0), handle, 0))])


@attack("init_module", "kill")
def init_module(ctx: Context) -> Outcome:
    """Load a kernel module."""
    del ctx
    return try_each([("init_module", lambda: syscall("init_module", None, 0, b""))])


@attack("tiocsti", "kill")
def tiocsti(ctx: Context) -> Outcome:
    """TIOCSTI: type commands into the terminal the OS was started from."""
    del ctx
    return try_each([("TIOCSTI", lambda: fcntl.ioctl(0, _TIOCSTI, b"x"))])


@attack("personality", "kill")
def personality(ctx: Context) -> Outcome:
    """Turn address-space randomisation off for what it runs next."""
    del ctx
    return try_each([("personality", lambda: check(libc.personality(_ADDR_NO_RANDOMIZE)))])


@attack("clock_settime", "kill")
def clock_settime(ctx: Context) -> Outcome:
    """Set the clock (certificates, update expiry and deferral all trust it)."""
    del ctx

    class Timespec(ctypes.Structure):
        _fields_ = (("sec", ctypes.c_long), ("nsec", ctypes.c_long))

    now = Timespec(int(time.time()), 0)
    return try_each([("clock_settime", lambda: check(libc.clock_settime(0, ctypes.byref(now))))])
