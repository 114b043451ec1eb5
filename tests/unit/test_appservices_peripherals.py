"""Peripheral operations through the real choke point: each one granted, denied (and recorded), observed outside."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _periph_apps import manifest_value

from bastion.applibs import _client, adc, gpio, i2c, pwm, spi, uart
from bastion.applibs._client import Connection
from bastion.applibs.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RequestError,
)
from bastion.hw.chipmodel import get_model
from bastion.hw.peripherals import Board
from bastion.hw.uart import connect_uart
from bastion.images.manifest import validate_manifest
from bastion.os.appservices.peripherals import PeripheralService
from bastion.os.appservices.registry import AppContext, Operation
from bastion.os.appservices.server import AppServer
from bastion.os.appservices.services import AppServices
from bastion.os.appservices.table import OPERATIONS


@dataclass
class App:
    client: Connection
    server: AppServer
    records: list[tuple[str, str]] = field(default_factory=list)
    component_id: str = ""

    def close(self) -> None:
        self.client.close()
        self.server.close()


@dataclass
class Device:
    board: Board
    service: PeripheralService
    apps: list[App] = field(default_factory=list)

    def app(
        self,
        capabilities: dict[str, Any],
        *,
        app_type: str = "Default",
        table: dict[str, Operation] | None = None,
    ) -> App:
        services = AppServices()
        services.add(self.service)
        cid = str(uuid.uuid4())
        records: list[tuple[str, str]] = []
        ctx = AppContext(
            component_id=cid,
            version="1.0.0",
            manifest=validate_manifest(json.dumps(manifest_value(cid, capabilities, app_type=app_type)).encode()),
            storage_dir=self.board.directory,
            services=services.mapping,
            record=lambda kind, detail: records.append((kind, detail)),
        )
        os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server = AppServer(ctx, os_end, table)
        server.start()
        app = App(Connection(app_end), server, records, cid)
        self.apps.append(app)
        return app


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    board = Board.prepare(tmp_path / "periph", get_model("mt3620-emu"))
    dev = Device(board, PeripheralService(board))
    yield dev
    dev.service.close()
    for app in dev.apps:
        app.close()


@pytest.fixture
def as_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make applibs' process-wide connection the given app's (as inside its sandbox)."""

    def use(app: App) -> None:
        monkeypatch.setattr(_client, "_connection", app.client)

    return use


def _denied(records: list[tuple[str, str]], capability: str) -> None:
    assert len(records) == 1
    assert records[0][0] == "app_denied"
    assert records[0][1].startswith(f"{capability}: ")


# -- GPIO ----------------------------------------------------------------------------------


def test_gpio_output_and_input_are_observable_and_drivable_outside(device: Device, as_app: Any) -> None:
    app = device.app({"Gpio": ["$SAMPLE_LED", "$SAMPLE_BUTTON_1"]})
    as_app(app)
    led = gpio.open_as_output("$SAMPLE_LED", gpio.HIGH)
    button = gpio.open_as_input(12)
    assert device.board.gpio.read(8) == 1
    led.set_value(gpio.LOW)
    rows = {row["pin"]: row for row in device.board.gpio.snapshot()}
    assert rows[8] == {"pin": 8, "mode": "output", "owner": app.component_id, "value": 0, "input": None}
    assert button.get_value() == 1  # pulled up
    device.board.gpio.set_input(12, 0)  # the button is pressed
    assert button.get_value() == 0
    assert led.get_value() == 0
    led.close()
    assert 8 not in {row["pin"] for row in device.board.gpio.snapshot()}
    assert app.records == []


def test_gpio_not_declared_is_denied_and_recorded(device: Device, as_app: Any) -> None:
    app = device.app({"Gpio": [8]})
    as_app(app)
    with pytest.raises(PermissionDeniedError) as info:
        gpio.open_as_output(9)
    assert info.value.capability == "Gpio"
    assert "Gpio 9 is not declared" in str(info.value)
    _denied(app.records, "Gpio")
    assert device.board.gpio.snapshot() == []


def test_gpio_unknown_name_and_wrong_type_are_denied(device: Device, as_app: Any) -> None:
    app = device.app({"Gpio": [8]})
    as_app(app)
    for value in ("$NO_SUCH_PIN", "$SAMPLE_UART_LOOPBACK", 500):
        with pytest.raises(PermissionDeniedError) as info:
            gpio.open_as_input(value)
        assert info.value.capability == "Gpio"
    assert len(app.records) == 3


def test_gpio_without_the_capability_is_denied_at_the_choke_point(device: Device) -> None:
    app = device.app({"Uart": ["ISU0"]})
    with pytest.raises(PermissionDeniedError, match="does not grant Gpio"):
        app.client.call("gpio.open", {"id": 8, "mode": "output", "value": 1})
    _denied(app.records, "Gpio")


def test_gpio_must_be_opened_and_is_busy_for_another_app(device: Device, as_app: Any) -> None:
    first = device.app({"Gpio": [8]})
    with pytest.raises(InvalidArgumentError, match="not open"):
        first.client.call("gpio.set", {"id": 8, "value": 1})
    first.client.call("gpio.open", {"id": 8, "mode": "output", "value": 1})
    with pytest.raises(InvalidArgumentError, match="mode must be one of"):
        first.client.call("gpio.open", {"id": 8, "mode": "sideways"})
    second = device.app({"Gpio": [8]})  # the store would refuse this install; the runtime still holds
    with pytest.raises(RequestError, match="already open") as info:
        second.client.call("gpio.open", {"id": 8, "mode": "input"})
    assert info.value.code == "unavailable"
    device.service.release(first.component_id)
    assert device.board.gpio.snapshot() == []
    second.client.call("gpio.open", {"id": 8, "mode": "input"})


def test_outside_cannot_set_an_output(device: Device) -> None:
    app = device.app({"Gpio": [8]})
    app.client.call("gpio.open", {"id": 8, "mode": "output", "value": 1})
    with pytest.raises(Exception, match="output driven by"):
        device.board.gpio.set_input(8, 0)


# -- UART ----------------------------------------------------------------------------------


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_uart_is_a_stream_bridged_to_a_socket_outside(device: Device, as_app: Any) -> None:
    app = device.app({"Uart": ["$SAMPLE_UART_LOOPBACK"]})
    as_app(app)
    port = uart.open("ISU0", baud_rate=9600)
    path = device.board.uart_socket("ISU0")
    assert path.exists()
    outside = connect_uart(path)
    _wait_for(lambda: device.service.opened(app.component_id) == ["Uart ISU0"])
    time.sleep(0.05)  # the bridge accepts the client
    port.write(b"hello\r\n")
    assert _recv_exactly(outside, 7) == b"hello\r\n"
    outside.sendall(b"ping")
    assert _recv_exactly(port._sock, 4) == b"ping"
    with pytest.raises(RequestError, match="already open"):
        uart.open("ISU0")
    port.close()
    _wait_for(lambda: not path.exists())
    assert outside.recv(16) == b""  # the line went away with the app's end
    outside.close()
    _wait_for(lambda: device.service.opened(app.component_id) == [])  # the bridge's thread ends just after
    uart.open("ISU0").close()  # free again


def test_uart_not_declared_is_denied(device: Device, as_app: Any) -> None:
    app = device.app({"Uart": ["ISU0"]})
    as_app(app)
    with pytest.raises(PermissionDeniedError) as info:
        uart.open("ISU1")
    assert info.value.capability == "Uart"
    _denied(app.records, "Uart")
    assert not device.board.uart_socket("ISU1").exists()


# -- I2C and SPI ---------------------------------------------------------------------------


def test_i2c_transfers_reach_the_register_device(device: Device, as_app: Any) -> None:
    device.board.i2c.attach("ISU2", 0x48, bytes([0x11, 0x22, 0x33]))
    app = device.app({"I2cMaster": ["$SAMPLE_I2C"]})
    as_app(app)
    with i2c.open("ISU2") as bus:
        assert bus.write_then_read(0x48, b"\x00", 3) == b"\x11\x22\x33"
        assert bus.write(0x48, b"\x10\xaa\xbb") == 3
        assert bus.read(0x48, 1) == b"\x00"  # pointer now at 0x12
        with pytest.raises(NotFoundError, match="no device answers at address 0x49"):
            bus.read(0x49, 1)
    assert device.board.i2c.registers("ISU2", 0x48)[0x10:0x12] == b"\xaa\xbb"
    with pytest.raises(InvalidArgumentError, match="not open"):
        bus.read(0x48, 1)


def test_i2c_not_declared_is_denied(device: Device, as_app: Any) -> None:
    app = device.app({"I2cMaster": ["ISU2"]})
    as_app(app)
    with pytest.raises(PermissionDeniedError) as info:
        i2c.open("ISU3")
    assert info.value.capability == "I2cMaster"
    _denied(app.records, "I2cMaster")


def test_spi_transfers_per_chip_select(device: Device, as_app: Any) -> None:
    device.board.spi.attach("ISU1", 1)
    app = device.app({"SpiMaster": ["ISU1"]})
    as_app(app)
    with spi.open("ISU1", chip_select=1) as flash:
        flash.write(b"\x20hello")
        assert flash.write_then_read(b"\x20", 5) == b"hello"
    with spi.open("ISU1", chip_select=0) as empty, pytest.raises(NotFoundError, match="chip select 0"):
        empty.transfer(b"\x00", 1)
    assert device.board.spi.registers("ISU1", 1)[0x20:0x25] == b"hello"


def test_spi_denied_for_an_i2c_app(device: Device) -> None:
    app = device.app({"I2cMaster": ["ISU1"]})
    with pytest.raises(PermissionDeniedError) as info:
        app.client.call("spi.open", {"id": "ISU1"})
    assert info.value.capability == "SpiMaster"
    _denied(app.records, "SpiMaster")


# -- ADC and PWM ---------------------------------------------------------------------------


def test_adc_samples_what_the_outside_set(device: Device, as_app: Any) -> None:
    device.board.adc.set("ADC-CONTROLLER-0", 1, 2048)
    app = device.app({"Adc": ["$SAMPLE_POTENTIOMETER_ADC_CONTROLLER"]})
    as_app(app)
    with adc.open("ADC-CONTROLLER-0") as controller:
        assert (controller.channels, controller.bits, controller.reference_mv) == (8, 12, 2500)
        assert controller.sample(1) == 2048
        assert controller.sample(0) == 0
        assert round(controller.millivolts(4095)) == 2500
        with pytest.raises(InvalidArgumentError, match="no channel 9"):
            controller.sample(9)


def test_adc_and_pwm_not_declared_are_denied(device: Device, as_app: Any) -> None:
    app = device.app({"Adc": ["ADC-CONTROLLER-0"], "Pwm": ["PWM-CONTROLLER-0"]})
    as_app(app)
    with pytest.raises(PermissionDeniedError) as info:
        pwm.open("PWM-CONTROLLER-1")
    assert info.value.capability == "Pwm"
    with pytest.raises(PermissionDeniedError) as info:
        app.client.call("adc.open", {"id": 0})
    assert info.value.capability == "Adc"
    assert [r[1].split(":")[0] for r in app.records] == ["Pwm", "Adc"]


def test_pwm_state_is_observable(device: Device, as_app: Any) -> None:
    app = device.app({"Pwm": ["PWM-CONTROLLER-2"]})
    as_app(app)
    controller = pwm.open("$SAMPLE_LED_PWM_CONTROLLER")
    assert controller.channels == 4
    controller.apply(0, period_ns=1_000_000, duty_ns=250_000)
    controller.apply(3, period_ns=20_000_000, duty_ns=1_500_000, polarity=pwm.INVERSED, enabled=False)
    rows = device.board.pwm.snapshot()
    assert [(r["controller"], r["channel"], r["duty_percent"], r["enabled"]) for r in rows] == [
        ("PWM-CONTROLLER-2", 0, 25.0, True),
        ("PWM-CONTROLLER-2", 3, 7.5, False),
    ]
    assert rows[1]["polarity"] == "inversed"
    assert rows[0]["owner"] == app.component_id
    with pytest.raises(InvalidArgumentError):
        controller.apply(0, period_ns=100, duty_ns=200)
    controller.close()
    assert device.board.pwm.snapshot() == []


# -- real-time apps ------------------------------------------------------------------------


def test_realtime_app_uses_its_peripherals_but_nothing_else(device: Device) -> None:
    assert OPERATIONS["net.connect"].realtime is False  # the real table's network op
    app = device.app({"Gpio": [10], "Adc": ["ADC-CONTROLLER-0"]}, app_type="RealTimeCapable")
    app.client.call("gpio.open", {"id": 10, "mode": "output", "value": 1})
    app.client.call("gpio.set", {"id": 10, "value": 0})
    assert app.client.call("adc.open", {"id": "ADC-CONTROLLER-0"})["channels"] == 8
    assert app.client.call("app.whoami")["application_type"] == "RealTimeCapable"
    with pytest.raises(PermissionDeniedError, match="real-time app"):
        app.client.call("net.connect")
    assert app.records[0][0] == "app_denied"
    assert all(op.realtime for name, op in OPERATIONS.items() if name.split(".")[0] in {"gpio", "uart", "i2c"})
