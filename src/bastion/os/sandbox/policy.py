"""The app sandbox as data: a :class:`SandboxPolicy` derived from an app, turned into a bubblewrap argv.

:func:`build_policy` is pure: it takes the installed app, its limits, its uid and
the host facts found once per boot (:class:`HostRuntime`, from
:func:`host_runtime`), and returns the policy. :func:`bwrap_command` spells the
policy as bubblewrap options; the same object's :meth:`SandboxPolicy.to_json`
is what ``bastion device apps`` and the status report show.

The layout inside (docs/adr/0005-app-sandbox.md)::

    /app                the app's version directory (ro)
    /storage            its MutableStorage directory (ro; writes go through applibs storage ops)
    /tmp                private tmpfs, size-bounded; /dev/shm likewise
    /run/bastion/lib    bastion/__init__.py + bastion/applibs (ro, on sys.path)
    /run/bastion/shim.py  the in-sandbox launcher (ro)
    /usr /lib /lib64 /bin, the interpreter's prefix (ro)
    /dev (minimal), /proc (its own pid namespace); fd 3 = the applibs socket

Example::

    runtime = host_runtime()
    policy = build_policy(app, uid=app_uid(app.component_id), storage_dir=..., runtime=runtime)
    cmd = bwrap_command(policy, seccomp_fd=fd, info_fd=info_w)
    argv = cmd.argv(shim_argv(policy, applibs_fd=sock.fileno()))
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bastion.images.manifest import AppManifest
from bastion.os.sandbox.bwrap import BwrapCommand

__all__ = [
    "APP_DIR",
    "BASTION_LIB",
    "NAMESPACES",
    "SHIM_PATH",
    "STORAGE_DIR",
    "HostRuntime",
    "SandboxLimits",
    "SandboxPolicy",
    "app_uid",
    "build_policy",
    "bwrap_command",
    "host_runtime",
    "shim_argv",
]

APP_DIR = "/app"
STORAGE_DIR = "/storage"
TMP_DIR = "/tmp"  # noqa: S108 - the sandbox's own private tmpfs, not the host's
SHM_DIR = "/dev/shm"  # noqa: S108 - the sandbox's own bounded tmpfs
#: Where ``bastion/__init__.py`` and ``bastion/applibs`` appear. Not ``/usr/lib/bastion``: a mount
#: point cannot be made inside the read-only ``/usr`` bind (see the ADR).
BASTION_LIB = "/run/bastion/lib"
SHIM_PATH = "/run/bastion/shim.py"
#: The hostname inside the app's uts namespace (not the host's).
HOSTNAME = "bastion-app"
#: The fd number of the applibs socket inside the sandbox.
APPLIBS_FD = 3
#: Every namespace the app gets a new one of (each is required: no ``-try`` variants).
NAMESPACES = ("user", "pid", "ipc", "uts", "cgroup", "net")
#: Host directories bound read-only (or re-created as the same symlink) when they exist.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")
#: The first uid handed to apps, and how many there are.
UID_BASE = 10000
UID_RANGE = 50000
#: Device nodes an app may read and write (Landlock rules; bubblewrap's --dev makes them).
DEV_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

_MIB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Resource bounds of one app sandbox (rlimits set inside its user namespace, tmpfs sizes).

    The defaults fit a Python app that uses the standard library. Measured here:
    an idle sandboxed app maps 17 MiB (13 MiB resident); each thread reserves
    an 8 MiB stack and, without ``MALLOC_ARENA_MAX=2`` (set in the app's
    environment), a 64 MiB malloc arena. With 256 MiB of address space 21
    threads fit; with 512 MiB ``nproc`` is the bound. The memory cgroup, where
    there is one, bounds what the whole sandbox really holds.

    Attributes:
        tmp_bytes: size of the private ``/tmp``.
        shm_bytes: size of the private ``/dev/shm``.
        nproc: processes (and threads) of the app's uid in its namespace (RLIMIT_NPROC).
        address_space_bytes: virtual memory per process (RLIMIT_AS).
        nofile: open files per process (RLIMIT_NOFILE).
        fsize_bytes: largest file a process may write (RLIMIT_FSIZE).
        memory_bytes: memory of the whole sandbox, ``/tmp`` included (its cgroup, where writable).
    """

    tmp_bytes: int = 16 * _MIB
    shm_bytes: int = 1 * _MIB
    nproc: int = 32
    address_space_bytes: int = 512 * _MIB
    nofile: int = 64
    fsize_bytes: int = 16 * _MIB
    memory_bytes: int = 256 * _MIB

    def to_json(self) -> dict[str, int]:
        """The limits as reported."""
        return {
            "tmp_bytes": self.tmp_bytes,
            "shm_bytes": self.shm_bytes,
            "nproc": self.nproc,
            "address_space_bytes": self.address_space_bytes,
            "nofile": self.nofile,
            "fsize_bytes": self.fsize_bytes,
            "memory_bytes": self.memory_bytes,
        }


@dataclass(frozen=True)
class HostRuntime:
    """What the sandbox is built from on this host (found once per boot by :func:`host_runtime`).

    Attributes:
        python: the real interpreter (a venv's ``bin/python`` resolved to its target).
        python_prefix: its installation prefix (the standard library; bound ro at its own path).
        package_dir: the running ``bastion`` package (only ``__init__.py`` and ``applibs/`` go in).
        shim: the in-sandbox launcher's source file.
        system_dirs: ``(path, symlink target or None)`` for each of :data:`SYSTEM_DIRS` that exists.
    """

    python: str
    python_prefix: str
    package_dir: str
    shim: str
    system_dirs: tuple[tuple[str, str | None], ...]


def host_runtime() -> HostRuntime:
    """Find the interpreter, the ``bastion`` package and the system directories of this host."""
    import bastion

    package = Path(bastion.__file__).resolve().parent
    systems: list[tuple[str, str | None]] = []
    for path in SYSTEM_DIRS:
        host = Path(path)
        if host.is_symlink():
            systems.append((path, str(host.readlink())))
        elif host.is_dir():
            systems.append((path, None))
    return HostRuntime(
        python=os.path.realpath(sys.executable),
        python_prefix=os.path.realpath(sys.base_prefix),
        package_dir=str(package),
        shim=str(package / "os" / "sandbox" / "_shim.py"),
        system_dirs=tuple(systems),
    )


def app_uid(component_id: str, taken: frozenset[int] = frozenset()) -> int:
    """A uid for the app inside its user namespace: stable per component ID, distinct from ``taken``."""
    slot = uuid.UUID(component_id).int % UID_RANGE
    for step in range(UID_RANGE):
        uid = UID_BASE + (slot + step) % UID_RANGE
        if uid not in taken:
            return uid
    raise ValueError("no app uid is free")


@dataclass(frozen=True)
class SandboxPolicy:
    """Everything that defines one app's sandbox.

    Attributes:
        component_id: the app.
        version: the version it runs.
        uid: its uid (and gid) inside its user namespace.
        app_dir: its version directory on the host (``/app`` inside).
        storage_dir: its MutableStorage directory on the host (``/storage`` inside), if granted.
        entry: the entry point inside the sandbox (``/app/...``).
        args: the manifest's ``CmdArgs``.
        env: the whole environment of the app.
        limits: its resource bounds.
        runtime: the host runtime it is built from.
        namespaces: the namespaces it gets.
    """

    component_id: str
    version: str
    uid: int
    app_dir: str
    storage_dir: str | None
    entry: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    limits: SandboxLimits
    runtime: HostRuntime
    namespaces: tuple[str, ...] = NAMESPACES
    landlock_ro: tuple[str, ...] = field(default=())
    landlock_rw: tuple[str, ...] = field(default=(TMP_DIR, SHM_DIR))

    def to_json(self) -> dict[str, Any]:
        """The policy as ``device apps`` and the status report show it (no host secrets: paths only)."""
        return {
            "namespaces": list(self.namespaces),
            "uid": self.uid,
            "cap_drop": "ALL",
            "no_new_privs": True,
            "seccomp": "kill-process denylist",
            "mounts": {
                APP_DIR: "ro",
                **({STORAGE_DIR: "ro"} if self.storage_dir is not None else {}),
                TMP_DIR: f"tmpfs {self.limits.tmp_bytes}",
                BASTION_LIB: "ro",
            },
            "limits": self.limits.to_json(),
        }

    def shim_spec(self, applibs_fd: int) -> dict[str, Any]:
        """What the in-sandbox launcher does (its one argument, as JSON)."""
        return {
            "entry": self.entry,
            "args": list(self.args),
            "path": [APP_DIR, BASTION_LIB],
            "launcher_path": [BASTION_LIB],
            "applibs_fd": applibs_fd,
            "rlimits": {
                "nproc": self.limits.nproc,
                "as": self.limits.address_space_bytes,
                "nofile": self.limits.nofile,
                "fsize": self.limits.fsize_bytes,
                "core": 0,
            },
            "landlock": {"ro": list(self.landlock_ro), "rw": list(self.landlock_rw), "rw_files": list(DEV_FILES)},
        }


def _entry(manifest: AppManifest) -> str:
    inside = PurePosixPath(APP_DIR) / manifest.entry_point
    if ".." in inside.parts:
        raise ValueError("the entry point leaves the app")
    return str(inside)


def build_policy(
    *,
    component_id: str,
    version: str,
    manifest: AppManifest,
    app_dir: Path,
    storage_dir: Path,
    uid: int,
    runtime: HostRuntime,
    limits: SandboxLimits | None = None,
) -> SandboxPolicy:
    """The sandbox of one app version (pure: no file is touched).

    Raises:
        ValueError: the entry point leaves the app (the manager checks this against the disk too).
    """
    storage = str(storage_dir) if manifest.capabilities.mutable_storage_kb is not None else None
    env = [
        ("PATH", "/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("MALLOC_ARENA_MAX", "2"),
        ("HOME", TMP_DIR),
        ("TMPDIR", TMP_DIR),
        ("PYTHONUNBUFFERED", "1"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("BASTION_APP_COMPONENT_ID", component_id),
        ("BASTION_APP_VERSION", version),
        ("BASTION_APPLIBS_FD", str(APPLIBS_FD)),
    ]
    if storage is not None:
        env.append(("BASTION_APP_STORAGE", STORAGE_DIR))
    readonly = [APP_DIR, BASTION_LIB, SHIM_PATH, runtime.python_prefix, "/proc", "/dev"]
    readonly += [path for path, _ in runtime.system_dirs]
    if storage is not None:
        readonly.append(STORAGE_DIR)
    return SandboxPolicy(
        component_id=component_id,
        version=version,
        uid=uid,
        app_dir=str(app_dir),
        storage_dir=storage,
        entry=_entry(manifest),
        args=tuple(manifest.cmd_args),
        env=tuple(env),
        limits=limits or SandboxLimits(),
        runtime=runtime,
        landlock_ro=tuple(dict.fromkeys(readonly)),
    )


def _under_system(path: str, runtime: HostRuntime) -> bool:
    return any(path == p or path.startswith(p + "/") for p, target in runtime.system_dirs if target is None)


def bwrap_command(policy: SandboxPolicy, *, seccomp_fd: int, info_fd: int, program: str = "bwrap") -> BwrapCommand:
    """The bubblewrap options of ``policy`` (the command is :func:`shim_argv`)."""
    runtime = policy.runtime
    cmd = BwrapCommand(program=program)
    cmd.unshare(*policy.namespaces).uid(policy.uid, policy.uid).hostname(HOSTNAME)
    cmd.die_with_parent().new_session().cap_drop_all()
    cmd.clearenv()
    for name, value in policy.env:
        cmd.setenv(name, value)
    for path, target in runtime.system_dirs:
        if target is None:
            cmd.ro_bind(path, path)
        else:
            cmd.symlink(target, path)
    if not _under_system(runtime.python_prefix, runtime):
        cmd.ro_bind(runtime.python_prefix, runtime.python_prefix)
    cmd.ro_bind(policy.app_dir, APP_DIR)
    if policy.storage_dir is not None:
        cmd.ro_bind(policy.storage_dir, STORAGE_DIR)
    package = Path(runtime.package_dir)
    cmd.ro_bind(str(package / "__init__.py"), f"{BASTION_LIB}/bastion/__init__.py")
    cmd.ro_bind(str(package / "applibs"), f"{BASTION_LIB}/bastion/applibs")
    cmd.ro_bind(runtime.shim, SHIM_PATH)
    cmd.dev("/dev").tmpfs(SHM_DIR, size_bytes=policy.limits.shm_bytes)
    cmd.proc("/proc")
    cmd.tmpfs(TMP_DIR, size_bytes=policy.limits.tmp_bytes)
    cmd.remount_ro("/dev").remount_ro("/")
    cmd.chdir(APP_DIR)
    cmd.info_fd(info_fd)
    cmd.seccomp(seccomp_fd)
    return cmd


def shim_argv(policy: SandboxPolicy, *, applibs_fd: int) -> list[str]:
    """The command bubblewrap runs: the real interpreter, isolated, on the launcher and its spec.

    ``-I`` ignores every ``PYTHON*`` variable and the script's directory; ``-S``
    skips ``site``, so no site-packages (the app has the standard library and
    ``bastion.applibs`` only).
    """
    spec = json.dumps(policy.shim_spec(applibs_fd), separators=(",", ":"))
    return [policy.runtime.python, "-I", "-S", SHIM_PATH, spec]
