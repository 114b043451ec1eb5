"""Without cgroups, an unprivileged OS's apps are bounded by RLIMIT_NPROC, counted in each app's own user namespace.

The kernel exempts host root from RLIMIT_NPROC, so this runs the sandboxes the
way an unprivileged OS does: bubblewrap as ``nobody``, with the system
interpreter (the test's own lives under ``/root``, which ``nobody`` cannot
enter) and app directories ``nobody`` can read. The launcher shim, its
Landlock, rlimits and hello are the real ones; the OS end is a real
:class:`AppServer`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.images.manifest import validate_manifest
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.sandbox_ops import SandboxSession
from bastion.os.appservices.server import AppServer
from bastion.os.sandbox.policy import HostRuntime, SandboxLimits, build_policy, bwrap_command, host_runtime, shim_argv
from bastion.os.sandbox.probe import probe
from bastion.os.sandbox.process import AppProcessTree, read_bwrap_info
from bastion.os.sandbox.seccomp import bpf_memfd

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3.11"
BOMB = """
import os, time
children = 0
try:
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(6)
            os._exit(0)
        children += 1
except OSError as exc:
    print("refused after", children, exc.errno, flush=True)
time.sleep(6)
"""
NEIGHBOUR = """
import os, time
time.sleep(1.5)
ok = 0
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    ok += 1
print("forked", ok, flush=True)
"""


def start(root: Path, name: str, code: str, uid: int, runtime: HostRuntime) -> tuple[AppProcessTree, AppServer, Path]:
    component_id = f"00000000-0000-4000-8000-00000000000{uid % 10}"
    app_dir = root / name
    app_dir.mkdir(mode=0o755)
    (app_dir / "main.py").write_text(code)
    manifest = validate_manifest(
        json.dumps(
            {"SchemaVersion": 1, "Name": name, "ComponentId": component_id, "EntryPoint": "main.py",
             "ApplicationType": "Default", "Capabilities": {}}
        ).encode()
    )  # fmt: skip
    policy = build_policy(
        component_id=component_id,
        version="1.0.0",
        manifest=manifest,
        app_dir=app_dir,
        storage_dir=root / "none",
        uid=uid,
        runtime=runtime,
        limits=SandboxLimits(nproc=20),
    )
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    session = SandboxSession({}, expect_hello=True)
    ctx = AppContext(component_id, "1.0.0", manifest, root, services={SandboxSession: session})
    server = AppServer(ctx, os_end)
    session.request_count = lambda: server.requests
    server.start()
    seccomp_fd = bpf_memfd(probe().seccomp_bpf)
    info_read, info_write = os.pipe()
    log = root / f"{name}.log"
    with log.open("wb") as output:
        cmd = bwrap_command(policy, seccomp_fd=seccomp_fd, info_fd=info_write)
        process = subprocess.Popen(
            cmd.argv(shim_argv(policy, applibs_fd=app_end.fileno())),
            pass_fds=[*cmd.fds, app_end.fileno()],
            stdout=output,
            stderr=output,
            env={},
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
        )
    os.close(info_write)
    info = read_bwrap_info(info_read, 10)  # bubblewrap writes it once the sandbox is set up
    for fd in (seccomp_fd, info_read):
        os.close(fd)
    app_end.close()
    init_pid, namespace = info["child-pid"], info["pid-namespace"]
    assert isinstance(init_pid, int)
    assert isinstance(namespace, int)
    return AppProcessTree(process, init_pid, namespace), server, log


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory ``nobody`` can read (pytest's own temp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="bastion-nproc-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_an_unprivileged_apps_fork_bomb_is_capped_in_its_namespace_and_hurts_no_one_else(world: Path) -> None:
    root = world
    ours = host_runtime()
    runtime = HostRuntime(SYSTEM_PYTHON, "/usr", ours.package_dir, ours.shim, ours.system_dirs)
    bomb, bomb_server, bomb_log = start(root, "bomb", BOMB, 10001, runtime)
    neighbour, neighbour_server, neighbour_log = start(root, "neighbour", NEIGHBOUR, 10002, runtime)
    try:
        neighbour.process.wait(20)
        deadline = time.monotonic() + 20
        while "refused after" not in bomb_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = bomb_log.read_text().split()
        assert refused[:2] == ["refused", "after"], bomb_log.read_text()
        assert int(refused[2]) < 20
        assert refused[3] == "11"  # EAGAIN: RLIMIT_NPROC, as the bomb's own uid in its own namespace
        assert "forked 5" in neighbour_log.read_text()  # same host uid, its own count: unharmed
        hello = bomb_server.ctx.service(SandboxSession).layers()
        assert hello["rlimits"]["nproc"] == 20
        as_nobody = subprocess.run(["/bin/true"], user=NOBODY, group=NOBODY, extra_groups=[], check=False)
        assert as_nobody.returncode == 0  # the OS's (host) uid still forks
    finally:
        for tree, server in ((bomb, bomb_server), (neighbour, neighbour_server)):
            assert tree.stop(0.5) == []
            server.close()
