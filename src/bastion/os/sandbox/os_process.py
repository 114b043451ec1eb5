"""The OS process's sandbox: what it sees, as which user, in which namespaces.

The boot supervisor (``bastion device run``) starts the OS through the command
line that :func:`os_command` builds from an :class:`OsSandboxPolicy` (data, so
a unit test reads the argv; docs/adr/0010-os-process-separation.md gives the
reasons). In the OS's mount namespace ``DEV/chip`` and ``DEV/flash`` do not
exist. It sees, at their own paths unless noted:

===============================  =====  ==========================================
what                             mode   where inside
===============================  =====  ==========================================
/usr /lib /lib64 /bin, /etc/ssl  ro     same (and resolv.conf, hosts, nsswitch.conf)
the interpreter and its venv     ro     same (real paths, symlinks resolved)
the OS runtime (DEV/run/os-*)    ro     same
DEV/os-state                     rw     same (the monitor opens staged images there)
the app store (DEV/apps)         rw     same
DEV/periph (if it exists)        rw     same
the config partition             ro     ``/run/bastion/boot/config.bin``
the bootloader partition         ro     ``/run/bastion/boot/bootloader.bin``
the booted slot's image          ro     ``/run/bastion/boot/os-image.bin``
the service CA file (if any)     ro     same
/tmp                             rw     a private tmpfs of ``tmp_size_bytes``
/dev, /proc                      -      a minimal /dev; the /proc of its own pid namespace
===============================  =====  ==========================================

It keeps the host network (it is the device's network stack). When the
supervisor runs as root (``policy.run_as`` set) the command has three stages::

    bwrap (as root: binds root-owned paths; own pid namespace whose init dies
           with this bwrap; keeps only CAP_SETUID, CAP_SETGID, CAP_SETPCAP)
      setpriv --reuid U --regid G --clear-groups --inh-caps=-all
              --bounding-set=-all --no-new-privs
        bwrap (as U: user, pid, ipc, uts and cgroup namespaces; its own /proc)
          python -m bastion.os ...

The second bwrap exists because a bwrap run as root covers ``/proc/sys``,
``/proc/irq``, ``/proc/bus`` and ``/proc/sysrq-trigger`` with read-only binds,
and the kernel then refuses any nested ``/proc`` mount from a user namespace
(``mnt_already_visible``): the OS could not start an app sandbox. The first
bwrap therefore binds the host ``/proc``, which the second covers with the
OS's own. Not root (``run_as`` None): one bwrap with the user namespace, and
the OS has the supervisor's (unprivileged) uid.

Example:
    >>> policy = OsSandboxPolicy(
    ...     runtime_dir=Path("/d/run/os-1"), state_dir=Path("/d/os-state"),
    ...     app_store=Path("/d/apps"), config=Path("/d/flash/config.bin"))
    >>> argv = os_command(policy, ["python", "-m", "bastion.os"]).argv
    >>> argv[argv.index("/run/bastion/boot/config.bin") - 2 :][:3]
    ['--ro-bind', '/d/flash/config.bin', '/run/bastion/boot/config.bin']
    >>> argv[-4:]
    ['--', 'python', '-m', 'bastion.os']
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bastion.os.errors import SandboxUnavailableError
from bastion.os.sandbox.bwrap import BWRAP, BwrapCommand, find_bwrap

__all__ = [
    "BOOT_FILES_DIR",
    "DEFAULT_OS_GID",
    "DEFAULT_OS_UID",
    "OS_TMP_BYTES",
    "SANDBOX_TMP",
    "SETPRIV",
    "SYSTEM_RO_PATHS",
    "OsCommand",
    "OsCredentials",
    "OsSandboxPolicy",
    "existing_system_paths",
    "find_tools",
    "interpreter_dirs",
    "os_command",
    "sandboxed_paths",
]

#: The unprivileged uid and gid the OS runs as when ``device run`` is root.
DEFAULT_OS_UID = 64000
DEFAULT_OS_GID = 64000
#: Bound on the OS's private /tmp.
OS_TMP_BYTES = 64 * 1024 * 1024
#: The privilege-dropping program (util-linux), looked up on PATH.
SETPRIV = "setpriv"
#: Where the read-only boot files appear inside the OS's namespace (never a ``flash/`` path).
BOOT_FILES_DIR = PurePosixPath("/run/bastion/boot")
CONFIG_NAME = "config.bin"
BOOT_CONFIG_NAME = "bootloader.bin"
OS_IMAGE_NAME = "os-image.bin"
#: Host paths the OS gets read-only at their own place (those that exist).
SYSTEM_RO_PATHS = (
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    # ctypes.util.find_library runs /sbin/ldconfig -p: without it pyseccomp cannot find libseccomp.
    "/sbin",
    "/etc/ssl",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
)
#: Capabilities the first (root) stage keeps, only so that setpriv can drop to U.
DROP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
#: Mode of the directories created inside the sandbox on the way to a bind.
DIR_MODE = 0o755
#: The OS's private tmpfs, and its mode.
SANDBOX_TMP = "/tmp"  # noqa: S108 - a tmpfs of the sandbox's own, not the host's /tmp
TMP_MODE = 0o1777
#: Namespaces the OS gets of its own (not the network: it is the device's network stack).
OS_NAMESPACES = ("user", "pid", "ipc", "uts", "cgroup")
#: What to run when a program is missing.
BWRAP_FIX = "apt-get install bubblewrap"
SETPRIV_FIX = "apt-get install util-linux"
#: How far below the process that ``Popen`` started the OS's own process is:
#: root: bwrap -> its pid-namespace init -> (setpriv exec'd) bwrap -> its init -> OS.
_DEPTH_AS_ROOT = 4
#: Not root: bwrap -> its pid-namespace init -> OS.
_DEPTH_UNPRIVILEGED = 2


@dataclass(frozen=True)
class OsCredentials:
    """The uid and gid the OS process runs as."""

    uid: int = DEFAULT_OS_UID
    gid: int = DEFAULT_OS_GID


@dataclass(frozen=True)
class OsSandboxPolicy:
    """Everything the OS process is given; :func:`os_command` turns it into argv.

    Paths are absolute host paths, already resolved by the caller.

    Attributes:
        runtime_dir: the unpacked, verified OS image (read-only).
        state_dir: the OS's state directory (read-write).
        app_store: the app store (read-write).
        config: the config partition file (read-only, at :data:`BOOT_FILES_DIR`).
        boot_config: the bootloader partition file (read-only), if any.
        os_image: the booted slot's image file (read-only, the delta base), if any.
        periph_dir: the emulated peripherals' directory (read-write), if it exists.
        read_only_files: more files the OS reads at their own path (the service CA file).
        interpreter_dirs: the interpreter's prefix, base prefix and venv (read-only).
        system_paths: host system paths bound read-only (those of :data:`SYSTEM_RO_PATHS` that exist).
        run_as: the uid and gid to drop to (``device run`` is root), or None (it is not).
        tmp_size_bytes: bound on the private /tmp.
        keep_fds: inherited fds the OS keeps (its end of the monitor's socketpair).
        bwrap: the bubblewrap program (name or absolute path).
        setpriv: the setpriv program (name or absolute path).
    """

    runtime_dir: Path
    state_dir: Path
    app_store: Path
    config: Path
    boot_config: Path | None = None
    os_image: Path | None = None
    periph_dir: Path | None = None
    read_only_files: tuple[Path, ...] = ()
    interpreter_dirs: tuple[Path, ...] = ()
    system_paths: tuple[str, ...] = SYSTEM_RO_PATHS
    run_as: OsCredentials | None = None
    tmp_size_bytes: int = OS_TMP_BYTES
    keep_fds: tuple[int, ...] = ()
    bwrap: str = BWRAP
    setpriv: str = SETPRIV


def sandboxed_paths(policy: OsSandboxPolicy) -> dict[str, str]:
    """Where the boot files appear inside the namespace: ``config``, ``boot_config``, ``os_image``."""
    paths = {"config": str(BOOT_FILES_DIR / CONFIG_NAME)}
    if policy.boot_config is not None:
        paths["boot_config"] = str(BOOT_FILES_DIR / BOOT_CONFIG_NAME)
    if policy.os_image is not None:
        paths["os_image"] = str(BOOT_FILES_DIR / OS_IMAGE_NAME)
    return paths


def _is_within(path: PurePosixPath, roots: Sequence[PurePosixPath]) -> bool:
    return any(path == root or root in path.parents for root in roots)


class _View:
    """Builds the file view in order: each bind's missing parents become 0755 directories.

    bubblewrap creates a destination's missing parents itself, but as root with
    mode 0700: the unprivileged OS could not walk them.
    """

    def __init__(self, cmd: BwrapCommand, system_paths: Sequence[str]) -> None:
        self.cmd = cmd
        self._existing = [PurePosixPath(p) for p in system_paths]  # bound host trees: their dirs exist
        self._read_only = list(self._existing)
        self._made: set[PurePosixPath] = {PurePosixPath("/")}
        for path in system_paths:
            # /etc itself is not bound, only files in it: it must be made 0755 too, or
            # the OS cannot read /etc/hosts or /etc/resolv.conf (no name resolves).
            self._parents(PurePosixPath(path))
            cmd.ro_bind(path, path)

    def tmpfs(self, dest: str, size_bytes: int, perms: int) -> None:
        self._parents(PurePosixPath(dest))
        self.cmd.tmpfs(dest, size_bytes=size_bytes, perms=perms)
        self._made.add(PurePosixPath(dest))

    def _parents(self, dest: PurePosixPath) -> None:
        for parent in reversed(dest.parents):
            if parent in self._made or _is_within(parent, self._existing):
                continue
            self.cmd.dir(str(parent), perms=DIR_MODE)
            self._made.add(parent)

    def bind(self, source: Path, dest: PurePosixPath | Path, *, writable: bool) -> None:
        target = PurePosixPath(dest)
        if not writable and _is_within(target, self._read_only):
            return  # already visible read-only (say, an interpreter under /usr)
        self._parents(target)
        if writable:
            self.cmd.bind(str(source), str(target))
        else:
            self.cmd.ro_bind(str(source), str(target))
            self._read_only.append(target)
        self._existing.append(target)


def _file_view(cmd: BwrapCommand, policy: OsSandboxPolicy) -> None:
    view = _View(cmd, policy.system_paths)
    view.tmpfs(SANDBOX_TMP, policy.tmp_size_bytes, TMP_MODE)  # first: binds below /tmp go on top of it
    cmd.dev("/dev")
    for directory in policy.interpreter_dirs:
        view.bind(directory, directory, writable=False)
    view.bind(policy.runtime_dir, policy.runtime_dir, writable=False)
    view.bind(policy.state_dir, policy.state_dir, writable=True)
    view.bind(policy.app_store, policy.app_store, writable=True)
    if policy.periph_dir is not None:
        view.bind(policy.periph_dir, policy.periph_dir, writable=True)
    view.bind(policy.config, BOOT_FILES_DIR / CONFIG_NAME, writable=False)
    if policy.boot_config is not None:
        view.bind(policy.boot_config, BOOT_FILES_DIR / BOOT_CONFIG_NAME, writable=False)
    if policy.os_image is not None:
        view.bind(policy.os_image, BOOT_FILES_DIR / OS_IMAGE_NAME, writable=False)
    for path in policy.read_only_files:
        view.bind(path, path, writable=False)


def _namespaces(cmd: BwrapCommand, policy: OsSandboxPolicy) -> BwrapCommand:
    return (
        cmd.unshare(*OS_NAMESPACES)
        .proc("/proc")
        .die_with_parent()
        .new_session()
        .cap_drop_all()
        .chdir(str(policy.state_dir))
    )


@dataclass(frozen=True)
class OsCommand:
    """A sandboxed OS command line.

    Attributes:
        argv: the whole command line.
        pass_fds: the fds to keep open into it.
        pid_depth: how many generations below the started process the OS's own process is.
    """

    argv: list[str]
    pass_fds: tuple[int, ...]
    pid_depth: int


def os_command(policy: OsSandboxPolicy, os_argv: Sequence[str]) -> OsCommand:
    """The command line that runs ``os_argv`` (``python -m bastion.os ...``) in the sandbox.

    ``os_argv`` must already name the in-sandbox paths (:func:`sandboxed_paths`).
    """
    if policy.run_as is None:
        single = BwrapCommand(program=policy.bwrap)
        _file_view(single, policy)
        for fd in policy.keep_fds:
            single.keep_fd(fd)
        argv = _namespaces(single, policy).argv(list(os_argv))
        return OsCommand(argv, tuple(single.fds), _DEPTH_UNPRIVILEGED)
    outer = BwrapCommand(program=policy.bwrap)
    _file_view(outer, policy)
    for fd in policy.keep_fds:
        outer.keep_fd(fd)
    # The host /proc, only so that the inner bwrap may mount the OS's own over it.
    outer.bind("/proc", "/proc").unshare("pid").die_with_parent().cap_drop_all().cap_add(*DROP_CAPS)
    drop = [
        policy.setpriv,
        "--reuid",
        str(policy.run_as.uid),
        "--regid",
        str(policy.run_as.gid),
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    inner = BwrapCommand(program=policy.bwrap).dev_bind("/", "/")  # the view above, device nodes usable
    argv = outer.argv([*drop, *_namespaces(inner, policy).argv(list(os_argv))])
    return OsCommand(argv, tuple(outer.fds), _DEPTH_AS_ROOT)


def _outermost(paths: Sequence[Path], covered: Sequence[PurePosixPath]) -> tuple[Path, ...]:
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        pure = PurePosixPath(path)
        if not _is_within(pure, covered) and not _is_within(pure, [PurePosixPath(k) for k in kept]):
            kept.append(path)
    return tuple(kept)


def interpreter_dirs(
    *,
    executable: str = sys.executable,
    prefix: str = sys.prefix,
    base_prefix: str = sys.base_prefix,
    covered: Sequence[str] = SYSTEM_RO_PATHS,
) -> tuple[Path, ...]:
    """The directories the interpreter runs from: its venv, its base prefix, its real binary's.

    Symlinks are resolved (``/root`` is 0700: the real prefix is bound at its
    own path, and the OS walks only what bubblewrap made for it). Directories
    inside another, or inside ``covered`` (``/usr``), are left out.
    """
    real_binary = Path(os.path.realpath(executable))
    found = [Path(prefix).resolve(), Path(base_prefix).resolve(), real_binary.parent.parent]
    return _outermost(found, [PurePosixPath(c) for c in covered])


def existing_system_paths(candidates: Sequence[str] = SYSTEM_RO_PATHS) -> tuple[str, ...]:
    """Those of ``candidates`` that exist on this host."""
    return tuple(path for path in candidates if os.path.lexists(path))


def find_tools(*, as_root: bool) -> tuple[str, str]:
    """The absolute paths of bubblewrap and (as root) setpriv.

    Raises:
        SandboxUnavailableError: one is not installed; ``fix`` says what to install.
    """
    bwrap = find_bwrap()
    if bwrap is None:
        raise SandboxUnavailableError("bubblewrap (bwrap)", BWRAP_FIX)
    setpriv = shutil.which(SETPRIV) if as_root else SETPRIV
    if setpriv is None:
        raise SandboxUnavailableError("setpriv", SETPRIV_FIX)
    return bwrap, setpriv
