"""The OS process's sandbox: the policy's argv, and probes run under exactly the OS's command line.

A probe replaces only the final command (``python -m bastion.os ...``) of the
argv that ``device run`` would use for a real, booted device, so what it can
and cannot reach is what the OS can and cannot reach.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_os_process import flashed_device

from bastion.cli._os_process import OsLaunch, descendant, hand_over, prepare_os_launch
from bastion.cli.device_run_cmds import child_env
from bastion.hw.chip import Chip
from bastion.hw.flash import Partition
from bastion.os.config import DeviceConfig, encode_config, load_config
from bastion.os.device_dir import migrate_app_store
from bastion.os.errors import SandboxUnavailableError
from bastion.os.sandbox.os_process import (
    BOOT_FILES_DIR,
    DEFAULT_OS_UID,
    OsCredentials,
    OsSandboxPolicy,
    existing_system_paths,
    find_tools,
    interpreter_dirs,
    os_command,
)

DEV = Path("/srv/devices/d1")
POLICY = OsSandboxPolicy(
    runtime_dir=DEV / "run" / "os-1234",
    state_dir=DEV / "os-state",
    app_store=DEV / "apps",
    config=DEV / "flash" / "config.bin",
    boot_config=DEV / "flash" / "bootloader.bin",
    os_image=DEV / "flash" / "os_a.bin",
    read_only_files=(Path("/etc/bastion/service-ca.pem"),),
    interpreter_dirs=(Path("/opt/venv"), Path("/opt/python3.11")),
    system_paths=("/usr", "/lib", "/etc/ssl"),
    run_as=OsCredentials(),
    keep_fds=(7,),
)
OS_ARGV = ["/opt/venv/bin/python", "-P", "-m", "bastion.os"]


def _pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == option]


# --- the policy, as argv ---------------------------------------------------------


def test_no_path_of_the_chip_or_the_flash_is_a_destination() -> None:
    argv = os_command(POLICY, OS_ARGV).argv
    destinations = [dest for option in ("--bind", "--ro-bind", "--dev-bind") for _, dest in _pairs(argv, option)]
    dirs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dir"]
    for path in [*destinations, *dirs]:
        assert "chip" not in Path(path).parts
        assert "flash" not in Path(path).parts
    # The flash files the OS reads are bound read-only, one by one, outside any flash/ path.
    ro = dict(_pairs(argv, "--ro-bind"))
    assert ro[str(DEV / "flash" / "config.bin")] == str(BOOT_FILES_DIR / "config.bin")
    assert ro[str(DEV / "flash" / "bootloader.bin")] == str(BOOT_FILES_DIR / "bootloader.bin")
    assert ro[str(DEV / "flash" / "os_a.bin")] == str(BOOT_FILES_DIR / "os-image.bin")
    assert str(DEV / "flash") not in argv
    assert str(DEV) not in [source for option in ("--bind", "--ro-bind") for source, _ in _pairs(argv, option)]


def test_what_is_writable_and_what_is_read_only() -> None:
    argv = os_command(POLICY, OS_ARGV).argv
    assert dict(_pairs(argv, "--bind")) == {
        str(DEV / "os-state"): str(DEV / "os-state"),
        str(DEV / "apps"): str(DEV / "apps"),
        "/proc": "/proc",  # the host /proc, covered by the OS's own (see the module docstring)
    }
    ro = dict(_pairs(argv, "--ro-bind"))
    for path in ("/usr", "/lib", "/etc/ssl", "/opt/venv", "/opt/python3.11", "/etc/bastion/service-ca.pem"):
        assert ro[path] == path
    assert ro[str(POLICY.runtime_dir)] == str(POLICY.runtime_dir)


def test_tmpfs_comes_before_the_binds_and_parents_are_walkable() -> None:
    argv = os_command(POLICY, OS_ARGV).argv
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 1] == "/tmp"
    assert argv[tmpfs - 4 : tmpfs] == ["--perms", "1777", "--size", str(POLICY.tmp_size_bytes)]
    first_device_bind = argv.index(str(DEV / "os-state"))
    assert tmpfs < first_device_bind
    dirs = {argv[i + 1]: argv[i - 1] for i, arg in enumerate(argv) if arg == "--dir"}
    for parent in ("/srv", "/srv/devices", str(DEV), str(DEV / "run"), "/run", "/run/bastion", str(BOOT_FILES_DIR)):
        assert dirs[parent] == "0755"
    assert "/usr" not in dirs  # bound trees are not re-created


def test_as_root_three_stages_drop_every_privilege() -> None:
    command = os_command(POLICY, OS_ARGV)
    argv = command.argv
    first_end = argv.index("--")
    outer = argv[:first_end]
    assert outer[0] == "bwrap"
    assert "--unshare-user" not in outer  # as root: it binds root-owned paths
    assert "--unshare-pid" in outer
    assert "--die-with-parent" in outer
    caps = [outer[i + 1] for i, arg in enumerate(outer) if arg == "--cap-add"]
    assert caps == ["CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"]
    drop_end = argv.index("--", first_end + 1)
    assert argv[first_end + 1 : drop_end] == [
        "setpriv",
        "--reuid",
        str(DEFAULT_OS_UID),
        "--regid",
        str(DEFAULT_OS_UID),
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]
    inner = argv[drop_end + 1 : argv.index("--", drop_end + 1)]
    assert inner[:4] == ["bwrap", "--dev-bind", "/", "/"]
    for option in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup"):
        assert option in inner
    assert "--unshare-net" not in argv  # the OS is the device's network stack
    assert inner[inner.index("--proc") + 1] == "/proc"
    assert inner[inner.index("--cap-drop") + 1] == "ALL"
    assert argv[-len(OS_ARGV) :] == OS_ARGV
    assert command.pass_fds == (7,)
    assert command.pid_depth == 4


def test_not_root_one_bwrap_with_a_user_namespace() -> None:
    command = os_command(replace(POLICY, run_as=None), OS_ARGV)
    argv = command.argv
    assert "setpriv" not in argv
    assert argv.count("bwrap") == 1
    assert "--unshare-user" in argv
    assert "--cap-add" not in argv
    assert str(DEV / "os-state") in argv
    assert command.pid_depth == 2


def test_interpreter_dirs_resolve_symlinks_and_skip_nested(tmp_path: Path) -> None:
    real = tmp_path / "real" / "python3.11"
    (real / "bin").mkdir(parents=True)
    (real / "bin" / "python3.11").touch()
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(real / "bin" / "python3.11")
    link = tmp_path / "link"
    link.symlink_to(real)
    found = interpreter_dirs(executable=str(venv / "bin" / "python"), prefix=str(venv), base_prefix=str(link))
    assert set(found) == {venv.resolve(), real.resolve()}
    assert interpreter_dirs(executable="/usr/bin/python3", prefix="/usr", base_prefix="/usr") == ()


def test_a_missing_bwrap_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailableError) as caught:
        find_tools(as_root=True)
    assert "bwrap" in str(caught.value)
    assert caught.value.fix == "apt-get install bubblewrap"


def test_hand_over_follows_no_link(tmp_path: Path) -> None:
    tree = tmp_path / "state"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.write_text("root's")
    (tree / "link").symlink_to(outside)
    (tree / "hard").hardlink_to(outside)
    owner = OsCredentials(DEFAULT_OS_UID + 7, DEFAULT_OS_UID + 7)
    assert hand_over(tree, owner) == 4  # tree, sub, sub/f and the link itself
    assert (tree / "sub" / "f").stat().st_uid == owner.uid
    assert (tree / "link").lstat().st_uid == owner.uid
    assert outside.stat().st_uid == 0  # neither through the symbolic link nor the hard link
    assert hand_over(tree, owner) == 0


def test_old_app_store_moves_out_of_flash(tmp_path: Path) -> None:
    (tmp_path / "flash" / "apps" / "c").mkdir(parents=True)
    assert migrate_app_store(tmp_path)
    assert (tmp_path / "apps" / "c").is_dir()
    assert not (tmp_path / "flash" / "apps").exists()
    assert not migrate_app_store(tmp_path)


# --- probes under the real command line ----------------------------------------------

PROBE = r"""
import errno, json, os, socket, subprocess, sys
dev, state, apps, runtime, fd = sys.argv[1:6]  # then "1" to check the pinned OS keys
out = {}
def attempt(name, action):
    try:
        action()
        out[name] = "ok"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, type(exc).__name__)
attempt("read_uds", lambda: open(os.path.join(dev, "chip", "uds"), "rb").close())
attempt("write_fuses", lambda: open(os.path.join(dev, "chip", "fuses.json"), "r+b").close())
attempt("list_flash", lambda: os.listdir(os.path.join(dev, "flash")))
out["dev_entries"] = sorted(os.listdir(dev))
attempt("write_config", lambda: open("/run/bastion/boot/config.bin", "r+b").close())
attempt("write_runtime", lambda: open(os.path.join(runtime, "probe"), "wb").close())
attempt("write_state", lambda: open(os.path.join(state, "probe"), "wb").close())
attempt("write_apps", lambda: open(os.path.join(apps, "probe"), "wb").close())
attempt("write_tmp", lambda: open("/tmp/probe", "wb").close())
attempt("write_usr", lambda: open("/usr/probe", "wb").close())
out["status"] = {k: v.split() for k, v in (l.split(":", 1) for l in open("/proc/self/status")) if k in (
    "Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs", "Groups")}
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["config"] = open("/run/bastion/boot/config.bin", "rb").read().hex()
out["os_image"] = open("/run/bastion/boot/os-image.bin", "rb").read(64).hex()
out["monitor_fd"] = socket.socket(fileno=int(fd)).getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
try:  # the OS is the apps' connection broker: it resolves names (/etc/hosts must be readable)
    out["resolve"] = socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
except OSError as exc:
    out["resolve"] = str(exc)
if sys.argv[6] == "1":
    sys.path.insert(0, runtime)
    from pathlib import Path
    from bastion.os.updates.os_update import pinned_os_keys
    out["pinned_keys"] = len(pinned_os_keys(Path("/run/bastion/boot/bootloader.bin")))
nested = subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
    "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--", "ls", "/proc"],
    capture_output=True, text=True)
out["nested"] = [nested.returncode, nested.stdout.split(), nested.stderr]
print(json.dumps(out))
"""


def _booted(tmp_path: Path) -> tuple[Path, Path]:
    from bastion.boot import boot_device

    dev, _ = flashed_device(tmp_path)
    Chip.open(dev).flash.write(Partition.CONFIG, encode_config(DeviceConfig(service_url="http://127.0.0.1:9")))
    return dev, boot_device(dev, now=dt.datetime.now(dt.UTC)).os_runtime_dir


def _launch(dev: Path, runtime: Path, monitor_fd: int) -> OsLaunch:
    config_path = Chip.open(dev).flash.path(Partition.CONFIG)
    launch = prepare_os_launch(
        dev_dir=dev,
        runtime_dir=runtime,
        config_path=config_path,
        config=load_config(config_path),
        boot_slot="A",
        monitor_fd=monitor_fd,
        once=False,
        env=child_env(runtime),
        owner=OsCredentials(),
    )
    assert launch.sandboxed
    return launch


def _with_command(launch: OsLaunch, command: list[str]) -> list[str]:
    """The OS's command line with ``python -m bastion.os ...`` replaced by ``command``."""
    tail = [sys.executable, "-P", "-m", "bastion.os"]
    start = next(i for i in range(len(launch.argv)) if launch.argv[i : i + len(tail)] == tail)
    return [*launch.argv[:start], *command]


def _probe(dev: Path, runtime: Path) -> dict[str, Any]:
    os_end, other_end = socket.socketpair()
    with os_end, other_end:
        launch = _launch(dev, runtime, os_end.fileno())
        state, apps = dev / "os-state", dev / "apps"
        args = [str(dev), str(state), str(apps), str(runtime), str(os_end.fileno()), "1"]
        done = subprocess.run(
            _with_command(launch, [sys.executable, "-P", "-c", PROBE, *args]),
            pass_fds=launch.pass_fds,
            env=launch.env,
            cwd=launch.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _gone(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()  # dead, not yet reaped
    except OSError:
        return True


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path of device run: run as root")
def test_the_os_cannot_reach_the_chip_or_the_flash_and_holds_no_privilege(tmp_path: Path) -> None:
    dev, runtime = _booted(tmp_path)
    out = _probe(dev, runtime)
    # DEV/chip and DEV/flash do not exist in its mount namespace, nor does DEV itself beyond what it was given.
    assert out["read_uds"] == "ENOENT"
    assert out["write_fuses"] == "ENOENT"
    assert out["list_flash"] == "ENOENT"
    assert out["dev_entries"] == ["apps", "os-state", "run"]  # made to reach the binds, holding only them
    for name in ("write_config", "write_runtime", "write_usr"):
        assert out[name] in {"EACCES", "EROFS"}, name
    assert (out["write_state"], out["write_apps"], out["write_tmp"]) == ("ok", "ok", "ok")
    status = out["status"]
    assert status["Uid"] == [str(DEFAULT_OS_UID)] * 4
    assert status["Gid"] == [str(DEFAULT_OS_UID)] * 4
    assert status.get("Groups", []) == []
    for caps in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        assert status[caps] == ["0000000000000000"], caps
    assert status["NoNewPrivs"] == ["1"]
    assert max(out["pids"]) < 10  # its own pid namespace: no host process is visible
    assert bytes.fromhex(out["config"]) == Chip.open(dev).flash.read(Partition.CONFIG)
    assert bytes.fromhex(out["os_image"]) == Chip.open(dev).flash.read(Partition.OS_A)[:64]
    assert out["monitor_fd"] == socket.SOCK_STREAM  # the socketpair to the monitor came through
    assert out["resolve"] == "127.0.0.1"  # /etc/hosts is readable by the OS's uid
    assert out["pinned_keys"] >= 1  # OS updates can check images against the pinned keys
    # App sandboxes nest: a user namespace and its own /proc inside the OS's sandbox.
    returncode, entries, stderr = out["nested"]
    assert returncode == 0, stderr
    assert max(int(e) for e in entries if e.isdigit()) < 10  # with a /proc of its own pid namespace
    # What the OS wrote belongs to its uid; the supervisor gave it its directories.
    assert (dev / "os-state" / "probe").stat().st_uid == DEFAULT_OS_UID
    assert (dev / "os-state").stat().st_uid == DEFAULT_OS_UID
    assert Chip.open(dev).chip_dir.stat().st_uid == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the probe as another user")
def test_not_root_the_os_runs_in_a_user_namespace() -> None:
    """``device run`` by an unprivileged user: one bwrap with a user namespace, the same view.

    Run for real as another uid, on a device tree that uid owns, with the
    system interpreter (this test's interpreter may live under 0700 /root).
    """
    user = OsCredentials(DEFAULT_OS_UID + 1, DEFAULT_OS_UID + 1)
    home = Path(tempfile.mkdtemp(prefix="bastion-nonroot-", dir="/tmp"))  # a tree the other uid can walk to
    dev = home / "dev"
    try:
        for sub in ("chip", "flash", "os-state", "apps", "run/os-1"):
            (dev / sub).mkdir(parents=True)
        (dev / "chip" / "uds").write_bytes(bytes(32))
        (dev / "flash" / "config.bin").write_bytes(b"{}")
        (dev / "flash" / "os_a.bin").write_bytes(b"image")
        home.chmod(0o755)
        hand_over(home, user)
        policy = OsSandboxPolicy(
            runtime_dir=dev / "run" / "os-1",
            state_dir=dev / "os-state",
            app_store=dev / "apps",
            config=dev / "flash" / "config.bin",
            os_image=dev / "flash" / "os_a.bin",
            system_paths=existing_system_paths(),
            run_as=None,
        )
        os_end, other_end = socket.socketpair()
        with os_end, other_end:
            paths = [str(p) for p in (dev, policy.state_dir, policy.app_store, policy.runtime_dir)]
            probe = ["/usr/bin/python3", "-I", "-c", PROBE, *paths, str(os_end.fileno()), "0"]
            command = os_command(replace(policy, keep_fds=(os_end.fileno(),)), probe)
            drop = ["setpriv", "--reuid", str(user.uid), "--regid", str(user.gid), "--clear-groups", "--"]
            done = subprocess.run(
                [*drop, *command.argv],
                pass_fds=command.pass_fds,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
    finally:
        shutil.rmtree(home)
    assert out["read_uds"] == "ENOENT"
    assert out["list_flash"] == "ENOENT"
    assert out["dev_entries"] == ["apps", "os-state", "run"]
    assert out["write_config"] == "EROFS"  # its own file, but a read-only bind
    assert (out["write_state"], out["write_apps"], out["write_tmp"]) == ("ok", "ok", "ok")
    assert out["status"]["Uid"] == [str(user.uid)] * 4
    assert out["status"]["CapEff"] == ["0000000000000000"]
    assert out["status"]["NoNewPrivs"] == ["1"]
    assert max(out["pids"]) < 10
    assert out["monitor_fd"] == socket.SOCK_STREAM
    returncode, entries, stderr = out["nested"]
    assert returncode == 0, stderr
    assert max(int(e) for e in entries if e.isdigit()) < 10


def _program(pid: int) -> bytes:
    """The first word of a process's command line."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]


def test_descendant_finds_the_process_below() -> None:
    # sh -> sh -> sleep (each "; true" keeps the shell from exec'ing its last command)
    child = subprocess.Popen(["sh", "-c", "sh -c 'sleep 30; true'; true"])
    grandchild = None
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while dt.datetime.now() < deadline:
            grandchild = descendant(child.pid, 2)
            # Found between its fork and its exec (a loaded machine), the process still runs sh.
            if grandchild is not None and _program(grandchild) == b"sleep":
                break
        assert grandchild is not None
        assert _program(grandchild) == b"sleep"
        assert descendant(child.pid, 0) == child.pid
        assert descendant(grandchild, 1) is None
    finally:
        if grandchild is not None:
            os.kill(grandchild, signal.SIGKILL)
        child.wait(10)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path of device run: run as root")
def test_killing_the_outer_bwrap_kills_everything_inside(tmp_path: Path) -> None:
    """What ``DeviceProcesses.stop`` relies on after its grace: SIGKILL to the started process."""
    dev, runtime = _booted(tmp_path)
    os_end, other_end = socket.socketpair()
    with os_end, other_end:
        launch = _launch(dev, runtime, os_end.fileno())
        argv = _with_command(launch, ["sh", "-c", "sleep 60 & sleep 60; true"])
        outer = subprocess.Popen(argv, pass_fds=launch.pass_fds, env=launch.env, cwd=launch.cwd)
    try:
        inner = None
        deadline = time.monotonic() + 10
        while inner is None and time.monotonic() < deadline:
            inner = descendant(outer.pid, launch.pid_depth + 1)  # a sleep below the stand-in OS
        assert inner is not None
        outer.kill()
        outer.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(inner) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(inner)
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()
