"""How the boot supervisor starts the OS process: in its sandbox, or (insecure) without.

:func:`prepare_os_launch` turns a booted device into the OS's command line:
it moves an old app store out of ``DEV/flash``, creates the OS's writable
directories and (as root) gives them to the OS's uid, checks that the sandbox
works (a preflight run of the interpreter under the same policy), and builds
the argv with :func:`bastion.os.sandbox.os_process.os_command`. The policy and
its reasons are in that module and in docs/adr/0010-os-process-separation.md.

A sandboxed OS is not the process that ``Popen`` started (that is bubblewrap):
:func:`descendant` finds the OS's own process, which the supervisor signals.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from bastion.hw.chip import Chip
from bastion.hw.flash import Partition, Slot
from bastion.os.config import DeviceConfig
from bastion.os.device_dir import app_store_dir, migrate_app_store, os_state_dir, periph_dir
from bastion.os.errors import SandboxUnavailableError
from bastion.os.sandbox.os_process import (
    SANDBOX_TMP,
    OsCredentials,
    OsSandboxPolicy,
    existing_system_paths,
    find_tools,
    interpreter_dirs,
    os_command,
    sandboxed_paths,
)

__all__ = [
    "INSECURE_WARNING",
    "PREFLIGHT_TIMEOUT_S",
    "OsLaunch",
    "descendant",
    "hand_over",
    "prepare_os_launch",
]

#: Bound on the sandbox preflight (the interpreter starting and exiting in it).
PREFLIGHT_TIMEOUT_S = 20.0
#: Bound on the stderr of a failed preflight quoted in the error.
PREFLIGHT_STDERR_CHARS = 400
#: Printed at every boot of a device with ``--insecure-no-sandbox``.
INSECURE_WARNING = (
    "WARNING: this device runs with --insecure-no-sandbox: the OS process and its apps are NOT sandboxed; "
    "they can read the chip's secrets. Its attestation evidence says so."
)


@dataclass(frozen=True)
class OsLaunch:
    """What ``Popen`` needs to start the OS.

    Attributes:
        argv: the command line.
        pass_fds: the fds it keeps.
        env: its environment.
        cwd: its working directory.
        pid_depth: how far below the started process the OS's own process is (0: it is that process).
        sandboxed: whether it runs in the sandbox.
    """

    argv: list[str]
    pass_fds: tuple[int, ...]
    env: dict[str, str]
    cwd: Path
    pid_depth: int
    sandboxed: bool


def hand_over(path: Path, owner: OsCredentials) -> int:
    """Give a directory tree to the OS's uid and gid (while the OS is down, at boot).

    The walk never follows a symbolic link (it changes the link itself), and
    leaves alone a file with more than one hard link: the OS could have made
    one to a file outside its tree.

    Returns:
        How many entries changed owner.

    Raises:
        OSError: the walk or a change failed; ``path`` is not a directory.
    """
    changed = 0
    top = os.lstat(path)
    if not stat.S_ISDIR(top.st_mode):
        raise NotADirectoryError(f"{path} is not a directory")
    if (top.st_uid, top.st_gid) != (owner.uid, owner.gid):
        os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
        changed += 1
    for _root, dirs, files, root_fd in os.fwalk(path, follow_symlinks=False):
        for name in (*dirs, *files):
            entry = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if (entry.st_uid, entry.st_gid) == (owner.uid, owner.gid):
                continue
            if not stat.S_ISDIR(entry.st_mode) and entry.st_nlink > 1:
                continue
            os.chown(name, owner.uid, owner.gid, dir_fd=root_fd, follow_symlinks=False)
            changed += 1
    return changed


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "stat").read_bytes()
        except OSError:
            continue  # it has just exited
        # The command name is in parentheses and may hold spaces: the fields after the last ")".
        fields = data[data.rindex(b")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendant(pid: int, depth: int) -> int | None:
    """The first process ``depth`` generations below ``pid`` (``pid`` itself for 0), if there is one."""
    if depth == 0:
        return pid
    parents = _parents()
    level = {pid}
    for _ in range(depth):
        level = {child for child, parent in parents.items() if parent in level}
        if not level:
            return None
    return min(level)


def _preflight(policy: OsSandboxPolicy, env: Mapping[str, str]) -> None:
    """Start the interpreter under ``policy`` once (it imports the OS image's package and exits).

    A sandbox that cannot work here then fails before the monitor starts, with
    bubblewrap's own words, instead of as an OS that crashes at every boot.
    """
    command = os_command(policy, [sys.executable, "-P", "-c", "import bastion"])
    try:
        done = subprocess.run(
            command.argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PREFLIGHT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailableError(f"a working bubblewrap ({exc})", "apt-get install bubblewrap") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-PREFLIGHT_STDERR_CHARS:]
        raise SandboxUnavailableError(
            f"a host on which the OS sandbox starts (it said: {detail or f'status {done.returncode}'})",
            "check that user namespaces work (`bwrap --unshare-user --ro-bind / / true`) "
            "and that the OS image and interpreter are readable by the OS's uid",
        )


def prepare_os_launch(
    *,
    dev_dir: Path,
    runtime_dir: Path,
    config_path: Path,
    config: DeviceConfig | None,
    boot_slot: str,
    monitor_fd: int,
    once: bool,
    env: Mapping[str, str],
    owner: OsCredentials,
) -> OsLaunch:
    """Prepare the device directory and build the OS's command line.

    Raises:
        SandboxUnavailableError: bubblewrap (or, as root, setpriv) is missing,
            or the sandbox does not work here; not raised with ``--insecure-no-sandbox``.
        OSError: the OS's directories cannot be prepared.
    """
    migrate_app_store(dev_dir)
    state_dir, app_store = os_state_dir(dev_dir).absolute(), app_store_dir(dev_dir).absolute()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    app_store.mkdir(mode=0o755, exist_ok=True)
    chip = Chip(dev_dir)
    boot_config = chip.flash.path(Partition.BOOTLOADER)
    os_image = chip.flash.path(Slot(boot_slot).flash_partition)
    periph = periph_dir(dev_dir).absolute()

    def os_argv(config_file: str, boot_file: str | None, image_file: str | None) -> list[str]:
        argv = [sys.executable, "-P", "-m", "bastion.os", "--monitor-fd", str(monitor_fd)]
        argv += ["--state-dir", str(state_dir), "--config", config_file, "--app-store", str(app_store)]
        argv += [] if boot_file is None else ["--boot-config", boot_file]
        argv += [] if image_file is None else ["--os-image", image_file]
        argv += ["--periph-dir", str(periph)] if periph.is_dir() else []  # bound at its own path
        return [*argv, *(["--once"] if once else [])]

    if config is not None and config.insecure_no_sandbox:
        argv = os_argv(str(config_path), str(boot_config), str(os_image))
        return OsLaunch(argv, (monitor_fd,), dict(env), state_dir, 0, sandboxed=False)
    as_root = os.geteuid() == 0
    bwrap, setpriv = find_tools(as_root=as_root)
    ca_file = Path(config.ca_file) if config is not None and config.ca_file else None
    policy = OsSandboxPolicy(
        runtime_dir=runtime_dir.resolve(),
        state_dir=state_dir,
        app_store=app_store,
        config=config_path.absolute(),
        boot_config=boot_config.absolute() if boot_config.is_file() else None,
        os_image=os_image.absolute() if os_image.is_file() else None,
        periph_dir=periph if periph.is_dir() else None,
        read_only_files=(ca_file.absolute(),) if ca_file is not None and ca_file.is_file() else (),
        interpreter_dirs=interpreter_dirs(),
        system_paths=existing_system_paths(),
        run_as=owner if as_root else None,
        bwrap=bwrap,
        setpriv=setpriv,
    )
    if policy.run_as is not None:
        for directory in (state_dir, app_store, policy.periph_dir):
            if directory is not None:
                hand_over(directory, policy.run_as)
    sandbox_env = {**env, "HOME": SANDBOX_TMP, "TMPDIR": SANDBOX_TMP}
    _preflight(policy, sandbox_env)
    inside = sandboxed_paths(policy)
    command = os_command(
        replace(policy, keep_fds=(monitor_fd,)),
        os_argv(inside["config"], inside.get("boot_config"), inside.get("os_image")),
    )
    return OsLaunch(command.argv, command.pass_fds, sandbox_env, state_dir, command.pid_depth, sandboxed=True)
