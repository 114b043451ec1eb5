"""The app sandbox's seccomp filter, compiled with libseccomp and handed to ``bwrap --seccomp FD``.

The filter allows by default and denies, by killing the whole process
(``SECCOMP_RET_KILL_PROCESS``), every syscall an app has no business making:
reaching other processes (ptrace, process_vm_*, pidfd_getfd), the filesystem
namespace (mount and the new mount API, pivot_root, chroot), the kernel (bpf,
keyrings, perf_event_open, modules, kexec, io_uring, userfaultfd), namespace
changes (unshare, setns, clone with a namespace flag), the clock, swap, reboot,
quotas, handle-based opens, personality changes, terminal injection (TIOCSTI,
TIOCLINUX), and every socket family but ``AF_UNIX``: an app gets network
sockets only from the OS, by SCM_RIGHTS. ``clone3`` answers ``ENOSYS`` instead,
because its flags live in memory a filter cannot read; libc then falls back to
``clone``, whose flags the filter checks (Flatpak does the same).

Killing rather than refusing with ``EPERM`` makes every attempt visible: the app
dies by SIGSYS, bubblewrap's init reports ``128 + SIGSYS`` and the app manager
records a ``sandbox_violation`` event (docs/adr/0005-app-sandbox.md). Syscalls
of another architecture (the i386 ABI on x86_64) are killed too.

Example::

    program = compile_bpf()             # once per boot
    fd = bpf_memfd(program)             # per sandbox, for bwrap --seccomp fd
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from typing import Any

from bastion.os.sandbox.errors import SandboxUnavailableError

__all__ = [
    "CLONE_NAMESPACE_FLAGS",
    "DENIED_SYSCALLS",
    "SECCOMP_KILLED_EXIT",
    "bpf_memfd",
    "compile_bpf",
    "load_libseccomp",
]

#: Syscalls that kill the app outright, grouped by what they would reach.
DENIED_SYSCALLS: tuple[str, ...] = (
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "process_madvise", "kcmp",
    "move_pages", "migrate_pages",
    # the mount table
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "fsopen", "fsmount", "fsconfig",
    "fspick", "open_tree", "mount_setattr",
    # namespaces
    "unshare", "setns",
    # the kernel
    "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "syslog", "uselib", "ustat", "sysfs", "_sysctl",
    "lookup_dcookie", "nfsservctl", "vhangup", "iopl", "ioperm", "fanotify_init",
    # the machine
    "acct", "swapon", "swapoff", "reboot", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "quotactl", "quotactl_fd",
    # files by handle (escapes a bind mount)
    "open_by_handle_at", "name_to_handle_at",
)  # fmt: skip

#: clone(2) flags that would create a namespace (clone's first argument on x86_64 and aarch64).
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

#: ioctl requests that push input into a terminal or drive the console.
_DENIED_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX
#: The only personality an app may set (PER_LINUX).
_PER_LINUX = 0

#: How bubblewrap's init reports an app killed by the filter (it exits with 128 + the signal).
SECCOMP_KILLED_EXIT = 128 + signal.SIGSYS


def load_libseccomp() -> Any:
    """The ``pyseccomp`` module (ctypes over the system libseccomp).

    Raises:
        SandboxUnavailableError: libseccomp or pyseccomp is missing.
    """
    try:
        import pyseccomp  # type: ignore[import-untyped]
    # AttributeError: a libseccomp too old for its symbols; RuntimeError: pyseccomp found no libseccomp at all.
    except (ImportError, OSError, AttributeError, RuntimeError) as exc:
        raise SandboxUnavailableError(
            "libseccomp (libseccomp.so.2) or its Python binding pyseccomp cannot be loaded",
            "apt-get install libseccomp2 && pip install pyseccomp",
        ) from exc
    return pyseccomp


def _syscall(sc: Any, name: str) -> int:
    number = int(sc.resolve_syscall(sc.Arch.NATIVE, name))
    if number == -1:  # unknown to this libseccomp (a negative pseudo-number means "not on this arch": fine)
        raise SandboxUnavailableError(
            f"libseccomp does not know the syscall {name} (it is too old)", "apt-get install libseccomp2"
        )
    return number


def _build(sc: Any) -> Any:
    kill = sc.KILL_PROCESS
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, kill)
    for name in DENIED_SYSCALLS:
        flt.add_rule(kill, _syscall(sc, name))
    for flag in CLONE_NAMESPACE_FLAGS:
        flt.add_rule(kill, _syscall(sc, "clone"), sc.Arg(0, sc.MASKED_EQ, flag, flag))
    flt.add_rule(sc.ERRNO(errno.ENOSYS), _syscall(sc, "clone3"))
    for name in ("socket", "socketpair"):
        flt.add_rule(kill, _syscall(sc, name), sc.Arg(0, sc.NE, socket.AF_UNIX))
    for request in _DENIED_IOCTLS:
        flt.add_rule(kill, _syscall(sc, "ioctl"), sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    flt.add_rule(kill, _syscall(sc, "personality"), sc.Arg(0, sc.NE, _PER_LINUX))
    return flt


def compile_bpf() -> bytes:
    """The filter as a classic BPF program for the native architecture.

    Raises:
        SandboxUnavailableError: libseccomp is missing or cannot build the filter.
    """
    sc = load_libseccomp()
    try:
        flt = _build(sc)
        fd = os.memfd_create("bastion-seccomp-build", os.MFD_CLOEXEC)
        with os.fdopen(fd, "w+b") as handle:
            flt.export_bpf(handle)
            handle.seek(0)
            return handle.read()
    except OSError as exc:
        raise SandboxUnavailableError(
            f"libseccomp cannot build the app filter: {exc.strerror or exc}", "apt-get install libseccomp2"
        ) from exc


def bpf_memfd(program: bytes) -> int:
    """A memfd holding ``program`` at offset 0, for ``bwrap --seccomp`` (pass it with ``pass_fds``).

    The caller closes it once bubblewrap has started.
    """
    fd = os.memfd_create("bastion-seccomp", os.MFD_CLOEXEC)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
