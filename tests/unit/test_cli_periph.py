"""CLI: device gpio/adc/pwm/i2c/spi/uart/peripherals drive and observe the emulated peripherals."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from _cli_support import run

from bastion.hw.chip import Chip
from bastion.hw.peripherals import Board, PwmState, periph_dir
from bastion.hw.uart import UartBridge


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    dev_dir = tmp_path / "dev"
    Chip.manufacture(dev_dir)
    return dev_dir


def test_gpio_list_set_and_json(dev: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    board = Board.prepare(periph_dir(dev), Chip.open(dev).model())
    board.gpio.open(8, "output", 1, owner="blink-app")
    code, out, err = run(monkeypatch, capsys, "device", "gpio", "--dir", str(dev), "--set", "$SAMPLE_BUTTON_1=0")
    assert code == 0, err
    assert "$SAMPLE_LED" in out
    assert "blink-app" in out
    assert board.gpio.read(12) == 0
    code, out, err = run(monkeypatch, capsys, "device", "gpio", "--dir", str(dev), "--set", "13=0", "--json")
    assert code == 0, err
    rows = {row["pin"]: row for row in json.loads(out)}
    assert rows[8]["mode"] == "output"
    assert rows[8]["value"] == 1
    assert rows[12]["input"] == 0
    assert rows[13]["value"] == 0
    code, _, err = run(monkeypatch, capsys, "device", "gpio", "--dir", str(dev), "--set", "8=0")
    assert code == 1
    assert "output driven by blink-app" in err
    code, _, err = run(monkeypatch, capsys, "device", "gpio", "--dir", str(dev), "--set", "99=1")
    assert code == 1
    assert "no GPIO 99" in err


def test_adc_pwm_i2c_spi(dev: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(monkeypatch, capsys, "device", "adc", "--dir", str(dev), "--set", "2=1000", "--json")
    assert code == 0, err
    assert {"controller": "ADC-CONTROLLER-0", "channel": 2, "value": 1000} in json.loads(out)
    code, _, err = run(monkeypatch, capsys, "device", "adc", "--dir", str(dev), "--set", "ADC-CONTROLLER-0:1=5000")
    assert code == 1
    assert "0..4095" in err
    board = Board(periph_dir(dev), Chip.open(dev).model())
    board.pwm.apply("PWM-CONTROLLER-1", 2, PwmState(1000, 100), owner="o")
    code, out, err = run(monkeypatch, capsys, "device", "pwm", "--dir", str(dev), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["duty_percent"] == 10.0
    code, out, err = run(
        monkeypatch, capsys, "device", "i2c", "--dir", str(dev), "ISU2", "--attach", "0x48=0102", "--json"
    )
    assert code == 0, err
    assert json.loads(out)[0]["registers"].startswith("0102")
    code, out, err = run(monkeypatch, capsys, "device", "spi", "--dir", str(dev), "ISU1", "--attach", "1", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["chip_select"] == 1
    code, _, err = run(monkeypatch, capsys, "device", "i2c", "--dir", str(dev), "ISU9", "--attach", "0x48")
    assert code == 1
    assert "no I2cMaster ISU9" in err
    code, out, err = run(monkeypatch, capsys, "device", "peripherals", "--dir", str(dev), "--json")
    assert code == 0, err
    assert json.loads(out)["rt_cores"] == 2


def test_uart_bridges_the_terminal(
    dev: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    board = Board.prepare(periph_dir(dev), Chip.open(dev).model())
    os_end, app_end = socket.socketpair()
    bridge = UartBridge(board.uart_socket("ISU0"), os_end)
    bridge.start()

    def echo_app() -> None:  # an app that answers each line
        data = app_end.recv(64)
        app_end.sendall(b"echo:" + data)

    thread = threading.Thread(target=echo_app)
    thread.start()
    code, out, err = run(
        monkeypatch,
        capsys,
        "device",
        "uart",
        "--dir",
        str(dev),
        "$SAMPLE_UART_LOOPBACK",
        "--send",
        "hi",
        "--seconds",
        "2",
    )
    thread.join(5)
    assert code == 0, err
    assert out == "echo:hi"
    app_end.close()
    bridge.close()
    code, _, err = run(monkeypatch, capsys, "device", "uart", "--dir", str(dev), "ISU1", "--seconds", "0.1")
    assert code == 1
    assert "an app must have the UART open" in err


def test_device_info_names_the_chip_model(tmp_path: Path) -> None:
    from bastion.boot.info import describe_device

    Chip.manufacture(tmp_path / "tiny", model="tiny-emu")
    assert describe_device(tmp_path / "tiny").to_json()["chip_model"] == "tiny-emu"


def test_app_validate_checks_peripherals_against_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from _periph_apps import manifest_value

    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("")
    caps = {"Gpio": ["$SAMPLE_LED", 99], "Uart": ["ISU3"]}
    (app / "app_manifest.json").write_text(json.dumps(manifest_value("0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10", caps)))
    code, out, _ = run(monkeypatch, capsys, "app", "validate", str(app), "--json")
    assert code == 1
    assert [e["path"] for e in json.loads(out)["errors"]] == ["$.Capabilities.Gpio[1]"]
    code, out, _ = run(monkeypatch, capsys, "app", "validate", str(app), "--model", "tiny-emu", "--json")
    assert code == 1
    assert [e["path"] for e in json.loads(out)["errors"]] == ["$.Capabilities.Gpio[1]", "$.Capabilities.Uart[0]"]
    blink = Path(__file__).resolve().parents[2] / "examples" / "apps" / "blink"
    code, out, err = run(monkeypatch, capsys, "app", "validate", str(blink), "--model", "tiny-emu", "--json")
    assert code == 0, err
