"""Attacks on files: the chip's secrets, the flash, the OS state, another app's storage, links.

The sandbox's mount namespace holds none of the device directory, so every
host path below should be missing; the read-only binds refuse writes; Landlock
refuses what a path trick might still reach (``/proc/PID/root``, reopening an
fd through ``/proc/self/fd``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from attacks import Context, Outcome, attack, read_file, try_each, write_file

__all__: list[str] = []

#: Where a device directory or its secrets might be, guessed without knowing the host.
GUESSES = (
    "/chip/uds", "/dev/chip/uds", "/flash/bootstate.json", "/os-state/device-key.pem", "/etc/shadow",
    "/etc/passwd", "/root/.ssh/id_rsa", "/root/.bash_history", "/home", "/var/lib", "/srv", "/opt", "/mnt",
    "/media", "/boot", "/sys/firmware", "/sys/kernel", "/etc/machine-id", "/var/run/docker.sock", "/work",
)  # fmt: skip


def _reads(paths: list[str]) -> list[tuple[str, Callable[[], object]]]:
    attempts: list[tuple[str, Callable[[], object]]] = []
    for path in paths:
        attempts.append((f"read {path}", lambda p=path: read_file(p)))
    return attempts


def _listing(path: str) -> bytes:
    return "\n".join(sorted(os.listdir(path))).encode()


@attack("read_uds")
def read_uds(ctx: Context) -> Outcome:
    """The Unique Device Secret and the chip's other files, by their host paths."""
    paths = ctx.under_dev("chip", "uds") + ctx.under_dev("chip", "fuses.json")
    paths += ctx.under_dev("chip", "device_id_cert.der")
    listings = [(f"list {p}", lambda p=p: _listing(p)) for p in ctx.under_dev("chip") + ctx.under_dev()]
    return try_each(_reads(paths) + listings)


@attack("read_device_key")
def read_device_key(ctx: Context) -> Outcome:
    """The device TLS private key and certificate in the OS state."""
    paths = ctx.under_dev("os-state", "device-key.pem") + ctx.under_dev("os-state", "device-cert.pem")
    return try_each(_reads(paths))


@attack("read_guessed_paths")
def read_guessed_paths(ctx: Context) -> Outcome:
    """Absolute paths an attacker would try without knowing the layout."""
    del ctx
    return try_each([(f"read {p}", lambda p=p: read_file(p) if not os.path.isdir(p) else _listing(p)) for p in GUESSES])


def _proc_pids() -> list[str]:
    return sorted(p for p in os.listdir("/proc") if p.isdigit())


@attack("proc_root_walk")
def proc_root_walk(ctx: Context) -> Outcome:
    """``/proc/PID/root`` and ``/proc/self/root`` as a way back to the host's root."""
    targets = ["self", "thread-self", *_proc_pids()] + ([str(ctx.os_pid)] if ctx.os_pid else [])
    attempts: list[tuple[str, Callable[[], object]]] = []
    for pid in targets:
        for inner in ctx.under_dev("chip", "uds") + ["/etc/shadow", "/root/.ssh/id_rsa"]:
            path = f"/proc/{pid}/root{inner}"
            attempts.append((f"read {path}", lambda p=path: read_file(p)))
    return try_each(attempts)


@attack("dotdot_walk")
def dotdot_walk(ctx: Context) -> Outcome:
    """``../`` walks out of ``/app``, ``/storage`` and ``/tmp``, by path and by changing directory."""
    attempts: list[tuple[str, Callable[[], object]]] = []
    for start in ("/app", "/storage", "/tmp", "/run/bastion/lib"):
        for inner in ctx.under_dev("chip", "uds") + ["/etc/shadow"]:
            path = start + "/.." * 16 + inner
            attempts.append((f"read {path}", lambda p=path: read_file(p)))

    def chdir_walk() -> bytes:
        here = os.getcwd()
        try:
            for _ in range(32):
                os.chdir("..")
            return read_file(os.path.relpath(ctx.under_dev("chip", "uds")[0] if ctx.dev else "/etc/shadow", "/"))
        finally:
            os.chdir(here)

    def dir_fd_walk() -> bytes:
        fd = os.open("/app", os.O_RDONLY | os.O_DIRECTORY)
        try:
            target = ("../" * 16) + (ctx.dev.lstrip("/") + "/chip/uds" if ctx.dev else "etc/shadow")
            inner = os.open(target, os.O_RDONLY, dir_fd=fd)
            try:
                return os.read(inner, 64)
            finally:
                os.close(inner)
        finally:
            os.close(fd)

    attempts += [("chdir ..", chdir_walk), ("openat ..", dir_fd_walk)]
    return try_each(attempts)


@attack("proc_os_cwd")
def proc_os_cwd(ctx: Context) -> Outcome:
    """The OS's working directory (and every visible process's) through ``/proc/PID/cwd``."""
    pids = _proc_pids() + ([str(ctx.os_pid)] if ctx.os_pid else [])
    attempts: list[tuple[str, Callable[[], object]]] = []
    for pid in pids:
        if pid == str(os.getpid()):
            continue  # its own cwd is /app
        attempts.append((f"readlink /proc/{pid}/cwd", lambda p=pid: os.readlink(f"/proc/{p}/cwd").encode()))
        attempts.append((f"list /proc/{pid}/cwd", lambda p=pid: _listing(f"/proc/{p}/cwd")))
        attempts.append((f"read /proc/{pid}/cwd/chip/uds", lambda p=pid: read_file(f"/proc/{p}/cwd/chip/uds")))
    return try_each(attempts)


@attack("write_fuses")
def write_fuses(ctx: Context) -> Outcome:
    """Rewrite the fuse bank (anti-rollback counter, debug lock) or plant a new chip file."""
    attempts = [(f"write {p}", lambda p=p: write_file(p, b"{}")) for p in ctx.under_dev("chip", "fuses.json")]
    attempts += [("write /chip/fuses.json", lambda: write_file("/chip/fuses.json", b"{}"))]
    for path in ctx.under_dev("chip", "planted"):
        attempts.append((f"create {path}", lambda p=path: os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)))
    return try_each(attempts)


@attack("write_flash")
def write_flash(ctx: Context) -> Outcome:
    """Overwrite an OS slot, the bootloader or an installed app's code, or plant a partition."""
    names = ("os_a.bin", "os_b.bin", "bootloader.bin", "config.bin")
    attempts = [(f"write {n}", lambda n=n: write_file(os.path.join(ctx.dev, "flash", n))) for n in names if ctx.dev]
    attempts += [
        ("write /app/main.py", lambda: write_file("/app/main.py")),
        ("create /app/planted.py", lambda: os.open("/app/planted.py", os.O_WRONLY | os.O_CREAT, 0o600)),
        ("chmod /app/main.py", lambda: os.chmod("/app/main.py", 0o777)),
    ]
    return try_each(attempts)


@attack("write_boot_state")
def write_boot_state(ctx: Context) -> Outcome:
    """Point the boot state at the other slot (or a trial that never ends)."""
    attempts = [(f"write {p}", lambda p=p: write_file(p, b"{}")) for p in ctx.under_dev("flash", "bootstate.json")]
    attempts += [("write /flash/bootstate.json", lambda: write_file("/flash/bootstate.json", b"{}"))]
    return try_each(attempts)


@attack("read_other_storage")
def read_other_storage(ctx: Context) -> Outcome:
    """Another app's storage, by host path and by walking out of ``/storage``."""
    paths = ctx.under_dev("os-state", "app-data", ctx.victim, "secret.txt") if ctx.victim else []
    paths += [f"/storage/../{ctx.victim}/secret.txt", "/storage/../../app-data"] if ctx.victim else []
    attempts = _reads(paths)
    attempts += [(f"list {p}", lambda p=p: _listing(p)) for p in ctx.under_dev("os-state", "app-data")]
    return try_each(attempts)


@attack("read_os_state")
def read_os_state(ctx: Context) -> Outcome:
    """The OS's own state: status, event queue, OS log, update memory, TUF metadata."""
    names = ("state.json", "events.json", "os.log", "updates.json", "ca-chain.pem")
    paths = [p for n in names for p in ctx.under_dev("os-state", n)]
    attempts = _reads(paths) + [(f"list {p}", lambda p=p: _listing(p)) for p in ctx.under_dev("os-state")]
    return try_each(attempts)


@attack("reopen_own_fds")
def reopen_own_fds(ctx: Context) -> Outcome:
    """Reopen its log (fd 1) through ``/proc/self/fd`` to read it or to reach its directory."""
    del ctx
    return try_each(
        [
            ("reopen fd 1 for reading", lambda: read_file("/proc/self/fd/1")),
            ("list the log's directory", lambda: _listing("/proc/self/fd/1/..")),
            ("reopen fd 1 read-write", lambda: os.open("/proc/self/fd/1", os.O_RDWR)),
        ]
    )


@attack("storage_direct_write")
def storage_direct_write(ctx: Context) -> Outcome:
    """Write ``/storage`` directly instead of through the OS (which counts the quota)."""
    del ctx
    return try_each(
        [
            ("create /storage/x", lambda: os.open("/storage/x", os.O_WRONLY | os.O_CREAT, 0o600)),
            ("mkdir /storage/d", lambda: os.mkdir("/storage/d")),
            ("symlink in /storage", lambda: os.symlink("/proc/1/root", "/storage/s")),
            ("rename in /storage", lambda: os.rename("/storage/planted-link", "/storage/y")),
        ]
    )


@attack("symlink_tricks")
def symlink_tricks(ctx: Context) -> Outcome:
    """Symlinks in ``/tmp`` (and ``/storage``) to the chip, to ``/proc/1/root``, to the OS state."""
    attempts: list[tuple[str, Callable[[], object]]] = []
    for index, target in enumerate([*ctx.under_dev("chip", "uds"), "/proc/1/root/etc/shadow", "../../chip/uds"]):
        link = f"/tmp/link-{index}"

        def follow(link: str = link, target: str = target) -> bytes:
            if not os.path.lexists(link):
                os.symlink(target, link)
            return read_file(link)

        attempts.append((f"follow {link} -> {target}", follow))
    attempts.append(("follow /storage/planted-link", lambda: read_file("/storage/planted-link")))
    return try_each(attempts)


@attack("hardlink_tricks")
def hardlink_tricks(ctx: Context) -> Outcome:
    """Hard links from ``/tmp`` to files outside it (the chip, its own code, its storage)."""
    sources = [*ctx.under_dev("chip", "uds"), "/app/main.py", "/storage/planted-link", "/run/bastion/shim.py"]
    attempts: list[tuple[str, Callable[[], object]]] = []
    for index, source in enumerate(sources):
        attempts.append((f"link {source}", lambda s=source, i=index: os.link(s, f"/tmp/hard-{i}")))

    def link_through_fd() -> None:
        fd = os.open("/app/main.py", os.O_RDONLY)
        try:
            os.link(f"/proc/self/fd/{fd}", "/tmp/hard-fd", follow_symlinks=True)
        finally:
            os.close(fd)

    attempts.append(("link via /proc/self/fd", link_through_fd))
    return try_each(attempts)
