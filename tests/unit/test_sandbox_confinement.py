"""What an app can and cannot do inside its real sandbox (bubblewrap + seccomp + Landlock + rlimits).

Each test installs a small app, runs it through the app manager and reads its
log and the events the OS recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _sandbox_support import APP_X, APP_Y, NOW, make_device, run_to_exit, wait_for

from bastion.os.sandbox.policy import SandboxLimits

#: Each forbidden call, as app code; the app must die by SIGSYS before printing "survived".
FORBIDDEN = {
    "ptrace": "import ctypes; ctypes.CDLL(None, use_errno=True).ptrace(0, 0, 0, 0)",
    "socket_inet": "import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
    "socket_inet6_udp": "import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)",
    "socket_packet": "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
    "socket_netlink": "import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)",
    "mount": "import ctypes; ctypes.CDLL(None).mount(b'none', b'/tmp', b'tmpfs', 0, None)",
    "unshare_user": "import ctypes; ctypes.CDLL(None).unshare(0x10000000)",
    "process_vm_readv": "import ctypes; ctypes.CDLL(None).process_vm_readv(1, None, 0, None, 0, 0)",
    "keyctl": "import ctypes; ctypes.CDLL(None).syscall(250, 0, 0, 0, 0)",  # x86_64 keyctl
    "bpf": "import ctypes; ctypes.CDLL(None).syscall(321, 0, 0, 0)",  # x86_64 bpf
}


@pytest.mark.parametrize("call", sorted(FORBIDDEN))
def test_a_forbidden_syscall_kills_the_app_and_is_recorded(tmp_path: Path, call: str) -> None:
    if call in ("keyctl", "bpf") and not sys.platform.startswith("linux"):
        pytest.skip("syscall numbers are for Linux")
    device = make_device(tmp_path)
    log = run_to_exit(device, APP_X, f"{FORBIDDEN[call]}\nprint('survived', flush=True)\n")
    assert "survived" not in log
    violations = device.events_of("sandbox_violation")
    assert len(violations) == 1
    assert "seccomp" in violations[0].detail
    failed = device.events_of("app_failed")
    assert failed[0].detail.startswith("signal 31 (SIGSYS")


def test_unix_sockets_threads_and_subprocesses_still_work(tmp_path: Path) -> None:
    code = """
import socket, subprocess, threading
a, b = socket.socketpair()
a.sendall(b"ping"); print("unix", b.recv(4).decode(), flush=True)
a.close(); b.close()
t = threading.Thread(target=print, args=("thread ok",)); t.start(); t.join()
print("child", subprocess.run(["/bin/true"]).returncode, flush=True)
"""
    device = make_device(tmp_path)
    log = run_to_exit(device, APP_X, code)
    assert "unix ping" in log
    assert "thread ok" in log
    assert "child 0" in log
    assert device.events_of("sandbox_violation") == []
    assert device.events_of("app_failed")[0].detail.startswith("exit code 0")


def test_the_filesystem_is_read_only_but_tmp_and_landlock_forbids_exec_from_tmp(tmp_path: Path) -> None:
    code = """
import os, subprocess
for path in ("/app/x", "/x", "/run/bastion/x", "/usr/x", "/storage/x", "/dev/x"):
    try:
        open(path, "w").close()
        print("WROTE", path)
    except OSError as exc:
        print("refused", path, exc.errno)
open("/tmp/ok", "w").write("fine"); print("tmp", open("/tmp/ok").read())
open("/tmp/run.sh", "w").write("#!/bin/sh\\necho EXECUTED\\n"); os.chmod("/tmp/run.sh", 0o755)
try:
    subprocess.run(["/tmp/run.sh"], check=False)
except PermissionError:
    print("exec from /tmp refused")
"""
    device = make_device(tmp_path)
    log = run_to_exit(device, APP_X, code, capabilities={"MutableStorage": {"SizeKB": 64}})
    assert "WROTE" not in log
    assert log.count("refused /") == 6
    assert "tmp fine" in log
    assert "EXECUTED" not in log
    assert "exec from /tmp refused" in log  # tmpfs allows exec; Landlock does not
    assert device.manager.layers(APP_X)["landlock"]["abi"] >= 1


def test_landlock_alone_refuses_a_path_outside_its_rules(tmp_path: Path) -> None:
    # Outside bubblewrap, so only Landlock stands between the process and the host file.
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parents[2] / "src")!r})
from bastion.os.sandbox._shim import apply_landlock
system = ["/usr", "/lib", "/lib64", "/bin", "/proc", {sys.base_prefix!r}, {sys.prefix!r}]
print(apply_landlock(system, [{str(allowed)!r}], []))
open({str(allowed / "x")!r}, "w").write("ok")
try:
    open({str(other / "x")!r}, "w")
    print("WROTE")
except PermissionError:
    print("refused")
"""
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    assert "refused" in result.stdout
    assert (allowed / "x").read_text() == "ok"
    assert not (other / "x").exists()


def test_rlimits_bound_processes_memory_files_and_file_size(tmp_path: Path) -> None:
    code = """
import resource, json
names = {"nproc": resource.RLIMIT_NPROC, "as": resource.RLIMIT_AS, "nofile": resource.RLIMIT_NOFILE,
         "fsize": resource.RLIMIT_FSIZE, "core": resource.RLIMIT_CORE}
print("limits", json.dumps({k: resource.getrlimit(v) for k, v in names.items()}), flush=True)
try:
    open("/tmp/big", "wb").write(b"x" * (2 * 1024 * 1024))
    print("BIG FILE")
except OSError as exc:
    print("file too large", exc.errno, flush=True)
try:
    hog = bytearray(512 * 1024 * 1024)
    print("HOG")
except MemoryError:
    print("memory refused", flush=True)
files = []
try:
    for _ in range(200):
        files.append(open("/dev/null"))
except OSError:
    print("files capped", len(files) < 64, flush=True)
"""
    limits = SandboxLimits(fsize_bytes=1024 * 1024, address_space_bytes=256 * 1024 * 1024, nofile=64, nproc=16)
    device = make_device(tmp_path, sandbox_limits=limits)
    log = run_to_exit(device, APP_X, code)
    line = next(x for x in log.splitlines() if x.startswith("limits "))
    seen = json.loads(line.split(" ", 1)[1])
    assert seen == {
        "nproc": [16, 16],
        "as": [256 * 1024 * 1024] * 2,
        "nofile": [64, 64],
        "fsize": [1024 * 1024] * 2,
        "core": [0, 0],
    }
    assert "file too large 27" in log  # EFBIG
    assert "memory refused" in log
    assert "files capped True" in log
    assert "BIG FILE" not in log
    assert "HOG" not in log


def test_proc_shows_only_the_sandbox_and_the_device_directory_is_not_there(tmp_path: Path) -> None:
    for name in ("chip", "flash", "os-state"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "chip" / "uds").write_bytes(b"secret")
    code = f"""
import os
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
for path in ({str(tmp_path / "chip" / "uds")!r}, {str(tmp_path / "flash")!r}, {str(tmp_path / "os-state")!r},
             {str(tmp_path)!r}, "/etc/passwd", "/root/.ssh", "/root/.bash_history", "/home", "/var", "/sys"):
    print("visible" if os.path.exists(path) else "absent", path)
print("uid", os.getuid(), "caps", open("/proc/self/status").read().split("CapEff:")[1].split()[0])
print("hostname", os.uname().nodename)
"""
    device = make_device(tmp_path)
    log = run_to_exit(device, APP_X, code)
    assert "pids [1, 2]" in log  # bubblewrap's init and the app: nothing of the host
    assert "visible" not in log
    layers = device.manager.layers(APP_X)
    assert f"uid {layers['uid']} caps 0000000000000000" in log
    assert "hostname bastion-app" in log


def test_a_fork_bomb_is_capped_and_hurts_neither_another_app_nor_the_os(tmp_path: Path) -> None:
    bomb = """
import os, time
children = 0
try:
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(8)
            os._exit(0)
        children += 1
except OSError as exc:
    print("fork refused after", children, exc.errno, flush=True)
time.sleep(8)
"""
    neighbour = """
import os, sys, time
time.sleep(1.0)  # start forking while the bomb holds its processes
ok = 0
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    ok += 1
print("neighbour forked", ok, flush=True)
"""
    device = make_device(tmp_path, sandbox_limits=SandboxLimits(nproc=24))
    from _sandbox_support import install_app

    install_app(tmp_path / "build", device.store, APP_X, bomb)
    install_app(tmp_path / "build", device.store, APP_Y, neighbour)
    device.manager.start_all(NOW)
    try:
        wait_for(lambda: "fork refused after" in device.log(APP_X))
        line = next(x for x in device.log(APP_X).splitlines() if x.startswith("fork refused"))
        assert int(line.split()[3]) < 24
        assert line.split()[4] == "11"  # EAGAIN
        wait_for(lambda: "neighbour forked" in device.log(APP_Y))
        assert "neighbour forked 5" in device.log(APP_Y)
        assert subprocess.run(["/bin/true"], check=False).returncode == 0  # the OS still forks
    finally:
        device.manager.stop_all()
    assert device.manager.running() == {}


def test_a_memory_hog_is_stopped_by_the_sandbox_cgroup(tmp_path: Path) -> None:
    code = """
print("hogging", flush=True)
hog = bytearray(200 * 1024 * 1024)  # within RLIMIT_AS, beyond the cgroup: touched, so really held
print("HELD", flush=True)
"""
    device = make_device(tmp_path, sandbox_limits=SandboxLimits(memory_bytes=64 * 1024 * 1024))
    log = run_to_exit(device, APP_X, code)
    assert device.manager.layers(APP_X)["cgroup"] == {"pids_max": 34, "memory_bytes": 64 * 1024 * 1024}
    assert "hogging" in log
    assert "HELD" not in log
    assert device.events_of("app_failed")[0].detail.startswith("signal 9")  # the OOM killer, inside the cgroup
