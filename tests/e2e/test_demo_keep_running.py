"""``bastion demo --keep-running``: prints the console URL and how to sign in; stops cleanly, no orphans.

The demo runs as its own process (as ``make demo`` runs it) with the short step
set ``--steps service``; the test collects every descendant while the service is
up, sends SIGTERM (or SIGINT, as Ctrl-C does), and checks that each one is gone.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: How long the demo's first three steps may take on a loaded machine.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def _children() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    table: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = int(fields[1])
    return table


def _descendants(root: int) -> set[int]:
    parents = _children()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BASTION_DATABASE_URL", None)
    env.update(
        {
            "BASTION_HOME": str(tmp_path / "home-service"),
            "BASTION_CONFIG": str(tmp_path / "operator" / "config.json"),
            "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "HOME": str(tmp_path / "home"),
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_keep_running_prints_the_console_and_stops_every_child(tmp_path: Path, stop_with: signal.Signals) -> None:
    demo_dir = tmp_path / "demo"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion.cli.main",
            "demo",
            "--dir",
            str(demo_dir),
            "--steps",
            "service",
            "--keep-running",
        ],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "keeps running" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(START_TIMEOUT_S), "".join(lines)
        output = "".join(lines)
        match = re.search(r"Console: (http://127\.0\.0\.1:(\d+)/console)", output)
        assert match, output
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(2)}/healthz", timeout=5) as answer:
            assert answer.status == 200
        # How to sign in: a command that prints a token, never a token on a command line.
        hint = output[output.index("print one with:") :]
        assert "bastion token create --role admin" in hint
        assert "--token " not in hint
        assert not re.search(r"\bbst_[A-Za-z0-9_-]{16,}", output)  # no token in the demo's output
        # The printed command works as printed (it names the demo's own config).
        command = hint.split("\n", 1)[1].split("#", 1)[0].replace("\\\n", " ")
        words = shlex.split(command)
        env = dict(_env(tmp_path), **dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-")))
        argv = [w for w in words if "=" not in w or w.startswith("-")]
        assert argv[0] == "bastion"
        created = subprocess.run(
            [sys.executable, "-m", "bastion.cli.main", *argv[1:], "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == 0, created.stderr
        assert '"token"' in created.stdout

        children = _descendants(process.pid)
        assert children, "the demo has no service process"
        process.send_signal(stop_with)
        assert process.wait(timeout=STOP_TIMEOUT_S) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    assert process.stdout is not None
    process.stdout.close()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "orphans left behind"
    assert "stopping the demo's processes" in "".join(lines)
