"""Blink end to end under ``bastion device run``: the sandboxed OS serves the sandboxed app its GPIOs.

Real processes: the CLI supervisor prepares ``DEV/periph`` for the chip's model,
the OS (in its own sandbox, without ``chip/``) reaches it through
``--periph-dir``, blink (in its sandbox) drives ``$SAMPLE_LED`` and reads
``$SAMPLE_BUTTON_1`` through applibs, and ``bastion device gpio`` watches and
presses them from outside.
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
from typing import Any

import pytest
from test_os_process import flashed_device

from bastion.crypto.keys import generate_private_key
from bastion.images.app_build import build_app_image, load_app_manifest
from bastion.os.apps.store import AppStore

pytestmark = pytest.mark.slow

BLINK = Path(__file__).resolve().parents[2] / "examples" / "apps" / "blink"
NO_SERVICE = "http://127.0.0.1:9"  # nothing listens: the OS keeps retrying, its apps run


def _wait(predicate: Callable[[], object], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
        check=False,
        timeout=60,
    )


def _gpio(dev: Path, *extra: str) -> dict[int, dict[str, Any]]:
    done = _cli("device", "gpio", "--dir", str(dev), "--json", *extra)
    assert done.returncode == 0, done.stderr
    return {row["pin"]: row for row in json.loads(done.stdout)}


def _both_levels(dev: Path, pin: int) -> Callable[[], bool]:
    seen: set[int] = set()

    def check() -> bool:
        seen.add(_gpio(dev)[pin]["value"])
        return seen == {0, 1}

    return check


def test_blink_under_device_run(tmp_path: Path) -> None:
    dev, _ = flashed_device(tmp_path)
    blink = load_app_manifest(BLINK).component_id
    image = tmp_path / "blink.img"
    build_app_image(BLINK, image, generate_private_key(), version="1.0.0")
    AppStore(dev / "apps").install(image, component_id=blink, version="1.0.0")
    log = dev / "os-state" / "apps" / f"{blink}.log"
    run = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli.main", "device", "run", "--dir", str(dev), "--service", NO_SERVICE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:
        _wait((dev / "periph" / "board.json").exists, "the board")
        assert json.loads((dev / "periph" / "board.json").read_text()) == {"model": "mt3620-emu"}
        _wait(lambda: _gpio(dev).get(8, {}).get("owner") == blink, "blink to open its LED")
        _wait(_both_levels(dev, 8), "the LED to blink")
        _gpio(dev, "--set", "12=0")  # press the button, as root from outside, while the OS writes the same files
        _wait(lambda: log.exists() and "button pressed" in log.read_text(), "blink to see the press")
        _gpio(dev, "--set", "12=1")
        apps = _cli("device", "apps", "--dir", str(dev), "--json")
        assert apps.returncode == 0, apps.stderr
        row = next(r for r in json.loads(apps.stdout) if r["component_id"] == blink)
        assert row["layers"].startswith("bwrap"), row
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert 8 not in _gpio(dev) or _gpio(dev)[8]["owner"] is None  # released when the OS stopped the app
