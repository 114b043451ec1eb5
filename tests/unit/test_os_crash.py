"""An OS crash under ``bastion device run``: its apps die with it; the supervisor reboots, a bounded number of times.

Real processes: the CLI supervisor, the monitor, the sandboxed OS and the
sample app (examples/apps/hello) installed in the device's app store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_os_process import flashed_device

from bastion.cli._os_crashes import MAX_OS_CRASH_RESTARTS, CrashBudget, crash_description, exit_status
from bastion.crypto.keys import generate_private_key
from bastion.images.app_build import build_app_image
from bastion.os.apps.store import AppStore

HELLO = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hello"
HELLO_ID = json.loads((HELLO / "app_manifest.json").read_text())["ComponentId"]
NO_SERVICE = "http://127.0.0.1:9"  # nothing listens: the OS keeps retrying, its apps run


def _wait(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _processes() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (parent pid, start time, argv[0..] joined by spaces) of every process."""
    table: dict[int, tuple[int, int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), cmdline)
    return table


def _tree(root: int) -> dict[int, tuple[int, bytes]]:
    """``root`` and every process below it: pid -> (start time, command line)."""
    table = _processes()
    found = {root}
    grew = True
    while grew:
        grew = False
        for pid, (parent, _, _) in table.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return {pid: (table[pid][1], table[pid][2]) for pid in found if pid in table}


def _alive(pid: int, started: int) -> bool:
    entry = _processes().get(pid)
    return entry is not None and entry[1] == started  # the same process, not a reused pid


def _os_pid(dev: Path) -> int | None:
    marker = f"--state-dir {dev / 'os-state'}".encode()
    for pid, (_, _, cmdline) in _processes().items():
        program = cmdline.split(b" ", 1)[0]
        if b"-m bastion.os" in cmdline and marker in cmdline and not program.endswith(b"bwrap"):
            return pid  # the OS's own process, not one of the bwraps that carry its argv
    return None


def _heartbeats(dev: Path) -> int:
    log = dev / "os-state" / "apps" / f"{HELLO_ID}.log"
    return log.read_text().count("heartbeat") if log.exists() else 0


def _events(dev: Path) -> list[dict[str, object]]:
    path = dev / "os-state" / "events.json"
    return json.loads(path.read_text())["events"] if path.exists() else []


def _device_with_hello(tmp_path: Path) -> Path:
    dev, _ = flashed_device(tmp_path)
    image = tmp_path / "hello.img"
    build_app_image(HELLO, image, generate_private_key(), version="1.0.0")
    AppStore(dev / "apps").install(image, component_id=HELLO_ID, version="1.0.0")
    return dev


def _device_run(dev: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bastion.cli.main", "device", "run", "--dir", str(dev), "--service", NO_SERVICE, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},  # progress lines unwrapped
    )


def test_kill_9_of_the_os_leaves_no_app_and_the_supervisor_restarts_it(tmp_path: Path) -> None:
    dev = _device_with_hello(tmp_path)
    run = _device_run(dev)
    try:
        _wait(lambda: _heartbeats(dev) > 0, "the app's first heartbeat")
        os_pid = _os_pid(dev)
        assert os_pid is not None
        assert b"python" in _processes()[os_pid][2].split(b" ", 1)[0]
        tree = _tree(os_pid)
        assert len(tree) > 1, f"the app runs below the OS (directly or in its sandbox): {tree}"
        os.kill(os_pid, signal.SIGKILL)
        # Every process that was below the OS is gone: its pid namespace died with it.
        _wait(lambda: not any(_alive(pid, started) for pid, (started, _) in tree.items()), "the OS's tree to die", 10)
        # The supervisor counts a crash, records it for the service, boots again and restarts the OS and its app.
        _wait(lambda: any(e["kind"] == "os_crashed" for e in _events(dev)), "the os_crashed event")
        _wait(lambda: (pid := _os_pid(dev)) is not None and pid != os_pid, "a new OS")
        beats = _heartbeats(dev)
        _wait(lambda: _heartbeats(dev) > beats, "the restarted app's heartbeat")
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "the OS crashed (killed by signal 9 (SIGKILL)); rebooting and restarting it (1 of 3)" in err
    assert "booting" in err
    assert err.count("booted slot A") == 2
    crashed = [e for e in _events(dev) if e["kind"] == "os_crashed"]
    assert len(crashed) == 1
    assert "killed by signal 9 (SIGKILL)" in str(crashed[0]["detail"])
    assert not any(b"main.py" in cmdline and str(dev).encode() in cmdline for _, _, cmdline in _processes().values())


def test_an_os_that_keeps_crashing_stops_the_run_after_the_bound(tmp_path: Path) -> None:
    from bastion.boot.factory import flash_os
    from bastion.boot.vendor import VendorPaths
    from bastion.crypto.keys import load_private_key_pem
    from bastion.images.os_build import build_os_image

    dev, _ = flashed_device(tmp_path)
    key = load_private_key_pem(VendorPaths(tmp_path / "vendor").os_key.read_bytes())
    broken = build_os_image(tmp_path / "broken.img", "1.2.4", 1, key, fault="fail-at-start").path
    flash_os(dev, broken)
    run = _device_run(dev)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1, err  # the OS's own status
    assert f"the OS crashed {MAX_OS_CRASH_RESTARTS + 1} times within 600 s (exit status 1); stopping" in err
    assert err.count("booted slot") == MAX_OS_CRASH_RESTARTS + 1
    crashed = [e for e in _events(dev) if e["kind"] == "os_crashed"]
    assert len(crashed) == MAX_OS_CRASH_RESTARTS + 1
    assert "the supervisor stopped" in str(crashed[-1]["detail"])
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("code", "crash"),
    [
        (0, None),
        (2, None),
        (3, None),
        (4, None),
        (10, None),
        (1, "exit status 1"),
        (137, "killed by signal 9 (SIGKILL)"),
        (-11, "killed by signal 11 (SIGSEGV)"),
        (5, "exit status 5"),
        (255, "exit status 255"),
    ],
)
def test_what_counts_as_a_crash(code: int, crash: str | None) -> None:
    assert crash_description(code) == crash


def test_crash_budget_is_a_sliding_window() -> None:
    budget = CrashBudget(max_restarts=2, window_s=100.0)
    assert budget.allow(now=0.0)
    assert budget.allow(now=50.0)
    assert not budget.allow(now=60.0)  # a third crash within 100 s
    assert budget.allow(now=155.0)  # those at 0 and 50 are out of the window; 60 and 155 remain
    assert budget.recent == 2
    assert exit_status(-9) == 137
    assert exit_status(3) == 3
