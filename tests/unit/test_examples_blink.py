"""The blink example as a real process on its applibs socket: its LED seen outside, its button pressed there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.hw.chipmodel import get_model
from bastion.hw.peripherals import Board
from bastion.images.app_build import load_app_manifest
from bastion.os.appservices.peripherals import PeripheralService
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.server import AppServer
from bastion.os.appservices.services import AppServices

ROOT = Path(__file__).resolve().parents[2]
BLINK = ROOT / "examples" / "apps" / "blink"


class Running:
    """An example app running as a child process, served by an in-process AppServer."""

    def __init__(self, app_dir: Path, board: Board, service: PeripheralService, *args: str) -> None:
        manifest = load_app_manifest(app_dir)
        self.records: list[tuple[str, str]] = []
        services = AppServices()
        services.add(service)
        ctx = AppContext(
            manifest.component_id,
            "1.0.0",
            manifest,
            board.directory,
            services=services.mapping,
            record=lambda kind, detail: self.records.append((kind, detail)),
        )
        os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server = AppServer(ctx, os_end)
        self.server.start()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT / "src"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "BASTION_APPLIBS_FD": str(app_end.fileno()),
        }
        self.process = subprocess.Popen(
            [sys.executable, str(app_dir / manifest.entry_point), *args],
            env=env,
            pass_fds=(app_end.fileno(),),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        app_end.close()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.process.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"the app exited ({self.process.returncode}) waiting for {what}: {self.lines}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.lines}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(10)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.server.close()


@pytest.fixture
def board(tmp_path: Path) -> Iterator[tuple[Board, PeripheralService]]:
    board = Board.prepare(tmp_path / "periph", get_model("mt3620-emu"))
    service = PeripheralService(board)
    yield board, service
    service.close()


def test_blink_toggles_the_led_and_reads_the_button(board: tuple[Board, PeripheralService]) -> None:
    periph, service = board
    app = Running(BLINK, periph, service)
    try:
        app.wait_for(lambda: len(periph.gpio.snapshot()) == 2, "the LED and button to open")
        owner = load_app_manifest(BLINK).component_id
        rows = {row["pin"]: row for row in periph.gpio.snapshot()}
        assert (rows[8]["mode"], rows[8]["owner"]) == ("output", owner)
        assert rows[12]["mode"] == "input"
        seen: set[int] = set()

        def toggled() -> bool:
            seen.add(periph.gpio.read(8))
            return seen == {0, 1}

        app.wait_for(toggled, "the LED to blink")
        periph.gpio.set_input(12, 0)  # press the button
        app.wait_for(lambda: any("button pressed" in line for line in app.lines), "the press")
        periph.gpio.set_input(12, 1)
        assert "LED every 0.25 s" in app.lines[-1]
        assert app.records == []
    finally:
        app.stop()
    service.release(owner)
    assert periph.gpio.snapshot() == [{"pin": 12, "mode": None, "owner": None, "value": 1, "input": 1}]


def test_the_examples_install_together_and_the_rt_partner_gets_a_core(tmp_path: Path) -> None:
    from _periph_apps import KEY

    from bastion.images.app_build import build_app_image
    from bastion.os.apps.store import AppStore

    store = AppStore(tmp_path / "apps")
    for name in ("blink", "partner-hl", "partner-rt"):
        app_dir = ROOT / "examples" / "apps" / name
        image = tmp_path / f"{name}.img"
        result = build_app_image(app_dir, image, KEY)
        store.install(image, component_id=result.header.component_id, version=result.header.version)
    rt = load_app_manifest(ROOT / "examples" / "apps" / "partner-rt")
    hl = load_app_manifest(ROOT / "examples" / "apps" / "partner-hl")
    assert rt.application_type == "RealTimeCapable"
    assert store.cores() == {rt.component_id: 0}
    assert rt.capabilities.allowed_application_connections == (hl.component_id,)
    assert hl.capabilities.allowed_application_connections == (rt.component_id,)
