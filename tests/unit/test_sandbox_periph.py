"""Sandboxed apps and their peripherals, driven from outside with the CLI: blink, a UART echo, a real-time app."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _cli_support import run
from _sandbox_support import KEY, NOW, Device, install_app, make_device, wait_for

from bastion.hw.chip import Chip
from bastion.hw.peripherals import Board, periph_dir
from bastion.images.app_build import build_app_image, load_app_manifest
from bastion.os.appservices.peripherals import PeripheralService
from bastion.os.appservices.services import AppServices
from bastion.os.sandbox.layers import summarize

ROOT = Path(__file__).resolve().parents[2]
BLINK = ROOT / "examples" / "apps" / "blink"
ECHO_ID = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
RT_ID = "4d5e6f7a-8b9c-4d0e-9f1a-2b3c4d5e6f7a"


@dataclass
class Bench:
    device: Device
    board: Board
    service: PeripheralService

    @property
    def dev_dir(self) -> str:
        return str(self.device.root)


def _blinks(board: Board, pin: int) -> Callable[[], bool]:
    """A condition that holds once ``pin`` was seen at both levels."""
    seen: set[int] = set()

    def check() -> bool:
        seen.add(board.gpio.read(pin))
        return seen == {0, 1}

    return check


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    monkeypatch.setenv("COLUMNS", "200")
    Chip.manufacture(tmp_path)  # the CLI reads the model from the chip
    board = Board.prepare(periph_dir(tmp_path), Chip.open(tmp_path).model())
    service = PeripheralService(board)
    services = AppServices()
    services.add(service)
    device = make_device(tmp_path, services=services.mapping)
    yield Bench(device, board, service)
    device.manager.stop_all()
    service.close()


def test_blink_in_its_sandbox_is_watched_and_pressed_with_the_cli(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blink = load_app_manifest(BLINK).component_id
    image = bench.device.root / "blink.img"
    build_app_image(BLINK, image, KEY, version="1.0.0")
    bench.device.store.install(image, component_id=blink, version="1.0.0")
    bench.device.manager.start_all(NOW)
    wait_for(lambda: len(bench.board.gpio.snapshot()) == 2)
    assert bench.device.manager.layers(blink)["sandbox"] == "bubblewrap"
    code, out, err = run(monkeypatch, capsys, "device", "gpio", "--dir", bench.dev_dir, "--json")
    assert code == 0, err
    rows = {row["pin"]: row for row in json.loads(out)}
    assert (rows[8]["mode"], rows[8]["owner"], rows[8]["names"]) == ("output", blink, "$SAMPLE_LED $SAMPLE_RGBLED_RED")
    wait_for(_blinks(bench.board, 8))
    code, _, err = run(monkeypatch, capsys, "device", "gpio", "--dir", bench.dev_dir, "--set", "$SAMPLE_BUTTON_1=0")
    assert code == 0, err
    wait_for(lambda: "button pressed, LED every 0.25 s" in bench.device.log(blink))
    bench.device.manager.stop(blink)
    assert bench.board.gpio.snapshot() == [{"pin": 12, "mode": None, "owner": None, "value": 0, "input": 0}]
    assert bench.device.events_of("app_denied") == []


ECHO = textwrap.dedent(
    """
    from bastion.applibs import gpio, uart

    port = uart.open("$SAMPLE_UART_LOOPBACK")
    port.write(b"ready\\n")
    try:
        gpio.open_as_output(8)  # not declared: denied, recorded
    except PermissionError as exc:
        port.write(f"denied {exc.capability}\\n".encode())
    while True:
        data = port.read(256)
        if not data:
            break
        port.write(data.upper())
    """
)


def test_uart_app_in_its_sandbox_talks_to_the_cli(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_app(bench.device.root / "build", bench.device.store, ECHO_ID, ECHO, capabilities={"Uart": ["ISU0"]})
    bench.device.manager.start_all(NOW)
    wait_for(lambda: bench.board.uart_socket("ISU0").exists(), timeout=20)
    code, out, err = run(
        monkeypatch, capsys, "device", "uart", "--dir", bench.dev_dir, "ISU0", "--send", "hello", "--seconds", "3"
    )
    assert code == 0, err
    assert "HELLO" in out
    denied = bench.device.events_of("app_denied")
    assert len(denied) == 1
    assert denied[0].detail.startswith("Gpio: ")
    bench.device.manager.stop(ECHO_ID)
    wait_for(lambda: not bench.board.uart_socket("ISU0").exists())


RT_APP = textwrap.dedent(
    """
    import time
    from bastion import applibs
    from bastion.applibs import gpio

    led = gpio.open_as_output(10, 1)
    print("type", applibs.whoami()["application_type"], flush=True)
    while True:
        led.set_value(0)
        time.sleep(0.05)
        led.set_value(1)
        time.sleep(0.05)
    """
)


def test_realtime_app_runs_sandboxed_on_its_core_with_its_peripherals(bench: Bench) -> None:
    _install_rt(bench)
    bench.device.manager.start_all(NOW)
    wait_for(lambda: "type RealTimeCapable" in bench.device.log(RT_ID), timeout=20)
    wait_for(_blinks(bench.board, 10))
    layers = bench.device.manager.layers(RT_ID)
    assert layers["realtime_core"] == 0
    assert layers["sandbox"] == "bubblewrap"
    assert summarize(layers).startswith("rt-core=0 bwrap")
    assert bench.device.manager.status()[0]["sandbox"]["realtime_core"] == 0  # type: ignore[index]


def _install_rt(bench: Bench) -> None:
    source = bench.device.root / "build" / "rt"
    source.mkdir(parents=True)
    manifest = {
        "SchemaVersion": 1,
        "Name": "rt-blink",
        "ComponentId": RT_ID,
        "EntryPoint": "main.py",
        "ApplicationType": "RealTimeCapable",
        "Capabilities": {"Gpio": [10]},
    }
    (source / "app_manifest.json").write_text(json.dumps(manifest))
    (source / "main.py").write_text(RT_APP)
    image = bench.device.root / "rt.img"
    build_app_image(source, image, KEY, version="1.0.0")
    bench.device.store.install(image, component_id=RT_ID, version="1.0.0")
