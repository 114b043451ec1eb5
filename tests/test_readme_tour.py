"""The README's tour runs as written: its ```sh tour blocks, in order, in one shell, from a fresh directory.

The commands are taken from README.md itself, so the tour cannot drift from what
works. They run with ``bash -euo pipefail`` from the repository root, as the
README says, with every state variable (``TOUR``, and from it ``BASTION_HOME``,
``BASTION_CONFIG`` and ``XDG_CONFIG_HOME``) under the test's ``tmp_path`` and
``HOME`` pointing at an empty directory that must stay empty. The test's only
changes to the script: a free port for 8443, this interpreter's virtual
environment for ``.venv``, and an idle pause before the final ``kill`` that counts
the running device's log lines (issue 9 §7: no line a second when nothing happens).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.cli._localstack import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ACTIVATE = ". .venv/bin/activate"
#: The whole tour, service start to OS update, on a loaded two-core machine.
TOUR_TIMEOUT_S = 900
#: The idle period over which the running device's log is counted, and the most lines it may write.
IDLE_S = 12
MAX_IDLE_LINES = 3

_BLOCK = re.compile(r"^```sh tour\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def tour_blocks(text: str) -> list[str]:
    """The README's blocks marked for the tour, in order."""
    return _BLOCK.findall(text)


def test_the_readme_marks_a_tour_that_covers_issue_9s_complaints() -> None:
    script = "\n".join(tour_blocks(README.read_text()))
    assert ACTIVATE in script  # the venv is activated, and the tour says so
    assert "EXAMPLES=$PWD/examples" in script  # the sample apps by absolute path
    for variable in ("BASTION_HOME", "BASTION_CONFIG", "XDG_CONFIG_HOME"):
        assert f"export {variable}" in script or f" {variable}=" in script
    # Nothing is published that the tour did not build; the device is not revoked before its update.
    for line in script.splitlines():
        published = re.search(r"bastion os publish (\S+)", line)
        if published:
            assert f"-o {published.group(1)}" in script
    assert "device revoke" not in script
    assert "--window-start" not in script
    # Commands that block run in the background, and the tour stops them.
    for blocking in ("bastion service run", "bastion device run --dir dev1 >"):
        line = next(x for x in script.splitlines() if blocking in x)
        assert line.split("#", 1)[0].rstrip().endswith("&"), line
    assert 'kill "$DEVICE_PID" "$SERVICE_PID"' in script


def _script(port: int, idle_log: Path) -> str:
    script = "\n".join(tour_blocks(README.read_text()))
    venv_activate = Path(sys.prefix) / "bin" / "activate"
    if not venv_activate.is_file():  # pragma: no cover - the suite runs in a venv (make test)
        pytest.skip("the tests do not run in a virtual environment")
    script = script.replace(ACTIVATE, f". {venv_activate}")
    script = script.replace("8443", str(port))
    idle = f"wc -l < dev1.log > {idle_log}.before; sleep {IDLE_S}; wc -l < dev1.log > {idle_log}.after\n"
    return script.replace('kill "$DEVICE_PID"', idle + 'kill "$DEVICE_PID"', 1)


def test_the_readme_tour_runs_and_installs_the_updates(tmp_path: Path) -> None:
    tour, home = tmp_path / "tour", tmp_path / "home"
    tour.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_") and k != "VIRTUAL_ENV"}
    env.update({"TOUR": str(tour), "HOME": str(home), "COLUMNS": "120", "PYTHONUNBUFFERED": "1"})
    env.pop("XDG_CONFIG_HOME", None)
    idle_log = tmp_path / "idle"
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", _script(free_port(), idle_log)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TOUR_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the tour did not finish in {TOUR_TIMEOUT_S}s:\n{output[-6000:]}\n{_logs(tour)}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"{output[-6000:]}\n{_logs(tour)}"

    # The update half installed: the app ran, and the device reports OS 1.1.0.
    state = json.loads((tour / "dev1" / "os-state" / "state.json").read_text())
    assert state["os_version"] == "1.1.0"
    assert "installed" in output
    assert "feed retail now" in output  # os promote shows the feed
    # All state stayed where the three variables put it.
    assert not list(home.iterdir()), sorted(str(p) for p in home.rglob("*"))
    assert (tour / "service").is_dir()
    assert (tour / "operator" / "config.json").is_file()
    assert (tour / "config" / "bastion" / "keys" / "acme-apps.key").is_file()
    assert not (REPO / ".bastion" / "tour").exists()
    # An idle running device stays quiet.
    before = int(Path(f"{idle_log}.before").read_text())
    after = int(Path(f"{idle_log}.after").read_text())
    assert after - before <= MAX_IDLE_LINES, (tour / "dev1.log").read_text()[-4000:]


def _logs(tour: Path) -> str:
    parts = []
    for name in ("service.log", "dev1.log"):
        path = tour / name
        if path.exists():
            parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)
