"""The emulated peripherals: chip models and their maps, the model recorded in the chip, the state files."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.hw.bus import MAX_DEVICES_PER_BUS, REGISTERS, RegisterBus
from bastion.hw.chip import Chip
from bastion.hw.chipmodel import DEFAULT_MODEL, MODELS, PeripheralType, get_model
from bastion.hw.errors import BusError, PeripheralError, StateCorruptError, UnknownPeripheralError
from bastion.hw.peripherals import Board, PwmState, periph_dir
from bastion.hw.uart import UartBridge, UartLimits, connect_uart

G, U, I2C, S, A, P = (
    PeripheralType.GPIO,
    PeripheralType.UART,
    PeripheralType.I2C,
    PeripheralType.SPI,
    PeripheralType.ADC,
    PeripheralType.PWM,
)


def test_mt3620_model_map() -> None:
    model = get_model("mt3620-emu")
    assert model.rt_cores == 2
    assert [b.name for b in model.isus] == ["ISU0", "ISU1", "ISU2", "ISU3", "ISU4"]
    assert {b.name: b.channels for b in model.adcs} == {"ADC-CONTROLLER-0": 8}
    assert [b.name for b in model.pwms] == ["PWM-CONTROLLER-0", "PWM-CONTROLLER-1", "PWM-CONTROLLER-2"]
    for kind in (U, I2C, S):  # one block, three roles
        assert model.resolve(kind, "ISU2").claims == model.resolve(U, "ISU2").claims
    assert model.resolve(G, "$SAMPLE_LED") == model.resolve(G, 8) == model.resolve(G, "$MT3620_GPIO8")
    assert model.resolve(I2C, "$MT3620_ISU2_I2C").value == "ISU2"
    assert "GPIO41" in model.resolve(A, "ADC-CONTROLLER-0").claims
    assert model.resolve(P, "$SAMPLE_LED_PWM_CONTROLLER").claims >= {"GPIO8", "PWM-CONTROLLER-2"}
    described = model.to_json()
    assert described["hardware_definitions"]["$SAMPLE_LED"] == {"type": "Gpio", "value": 8}  # type: ignore[index]


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (G, 76, "no GPIO 76"),
        (G, True, "no GPIO True"),
        (G, "8", "no GPIO 8"),  # a GPIO is a number, as in Azure Sphere manifests
        (G, "$SAMPLE_I2C", "is a I2cMaster, not a Gpio"),
        (U, "isu0", "no Uart isu0"),
        (U, 0, "no Uart 0"),
        (A, "ADC-CONTROLLER-1", "has ADC-CONTROLLER-0"),
        (P, "$NOPE", "not in the mt3620-emu hardware definition"),
    ],
)
def test_resolve_refuses_what_the_chip_lacks(kind: PeripheralType, value: object, message: str) -> None:
    with pytest.raises(UnknownPeripheralError, match=message):
        get_model("mt3620-emu").resolve(kind, value)


def test_models_are_configurable_and_named() -> None:
    tiny = get_model("tiny-emu")
    assert tiny.rt_cores == 1
    assert tiny.resolve(U, "$SAMPLE_UART_LOOPBACK").value == "ISU0"
    with pytest.raises(UnknownPeripheralError, match="no GPIO 20"):
        tiny.resolve(G, 20)
    with pytest.raises(UnknownPeripheralError, match="unknown chip model"):
        get_model("z80")
    assert DEFAULT_MODEL in MODELS


def test_chip_records_its_model_at_manufacture_and_old_chips_are_the_default(tmp_path: Path) -> None:
    assert Chip.manufacture(tmp_path / "tiny", model="tiny-emu").model().name == "tiny-emu"
    assert Chip.open(tmp_path / "tiny").model().rt_cores == 1
    old = Chip.manufacture(tmp_path / "old")
    (old.chip_dir / "model.json").unlink()  # made before chip models existed
    assert Chip.open(tmp_path / "old").model().name == DEFAULT_MODEL
    (old.chip_dir / "model.json").write_text('{"model": "z80"}')
    with pytest.raises(StateCorruptError, match="unknown chip model"):
        Chip.open(tmp_path / "old").model()
    with pytest.raises(UnknownPeripheralError):
        Chip.manufacture(tmp_path / "bad", model="z80")
    assert not (tmp_path / "bad").exists()


def test_board_files_and_power_on_reset(tmp_path: Path) -> None:
    directory = periph_dir(tmp_path)
    board = Board.prepare(directory, get_model("mt3620-emu"))
    assert json.loads((directory / "board.json").read_text()) == {"model": "mt3620-emu"}
    board.gpio.open(8, "output", 1, owner="app-a")
    board.gpio.set_input(12, 0)
    board.adc.set("ADC-CONTROLLER-0", 3, 4095)
    board.pwm.apply("PWM-CONTROLLER-0", 1, PwmState(1000, 500), owner="app-a")
    board.i2c.attach("ISU2", 0x50, b"\x01")
    (directory / "uart-ISU0.sock").write_text("stale")
    assert Board.load(directory).model.name == "mt3620-emu"
    again = Board.prepare(directory, get_model("mt3620-emu"))  # a reboot
    assert again.gpio.snapshot() == [{"pin": 12, "mode": None, "owner": None, "value": 0, "input": 0}]
    assert again.adc.read("ADC-CONTROLLER-0", 3) == 4095  # the world outside keeps its state
    assert again.pwm.snapshot() == []
    assert again.i2c.registers("ISU2", 0x50)[0] == 1
    assert not (directory / "uart-ISU0.sock").exists()
    assert Board.load(tmp_path / "nothing").model.name == DEFAULT_MODEL


def test_gpio_ownership_and_bounds(tmp_path: Path) -> None:
    board = Board.prepare(tmp_path, get_model("mt3620-emu"))
    board.gpio.open(9, "output", 0, owner="a")
    with pytest.raises(PeripheralError, match="held by a"):
        board.gpio.open(9, "input", 0, owner="b")
    with pytest.raises(PeripheralError, match="not an output opened by this app"):
        board.gpio.write(9, 1, owner="b")
    with pytest.raises(PeripheralError, match="0 or 1"):
        board.gpio.write(9, 2, owner="a")
    with pytest.raises(UnknownPeripheralError):
        board.gpio.set_input(99, 1)
    board.gpio.release(owner="b")  # nothing of b's
    assert board.gpio.read(9) == 0
    board.gpio.release(owner="a", pin=9)
    assert board.gpio.read(9) == 1  # back to the pull-up


def test_corrupt_state_is_reported(tmp_path: Path) -> None:
    board = Board.prepare(tmp_path, get_model("mt3620-emu"))
    (tmp_path / "gpio.json").write_text("[1, 2")
    with pytest.raises(StateCorruptError):
        board.gpio.read(8)
    (tmp_path / "gpio.json").write_bytes(b" " * (70 * 1024))
    with pytest.raises(StateCorruptError, match="larger than"):
        board.gpio.read(8)


def test_adc_and_pwm_bounds(tmp_path: Path) -> None:
    board = Board.prepare(tmp_path, get_model("tiny-emu"))
    assert board.adc.max_value == 1023
    with pytest.raises(PeripheralError, match=r"0\.\.1023"):
        board.adc.set("ADC-CONTROLLER-0", 0, 1024)
    with pytest.raises(UnknownPeripheralError, match="no channel 4"):
        board.adc.read("ADC-CONTROLLER-0", 4)
    for bad in (PwmState(0, 0), PwmState(10, 11), PwmState(10, 5, "sideways"), PwmState(2 * 10**9, 1)):
        with pytest.raises(PeripheralError):
            board.pwm.apply("PWM-CONTROLLER-0", 0, bad, owner="a")
    assert board.adc.snapshot()[0] == {"controller": "ADC-CONTROLLER-0", "channel": 0, "value": 0}


def test_register_bus(tmp_path: Path) -> None:
    model = get_model("mt3620-emu")
    bus = RegisterBus(tmp_path / "i2c.json", model, I2C)
    bus.attach("ISU1", 0x20, b"\xff" * 4)
    assert bus.transfer("ISU1", 0x20, b"\xfe\x01\x02\x03", 0) == b""  # wraps past the last register
    registers = bus.registers("ISU1", 0x20)
    assert (registers[0xFE], registers[0xFF], registers[0], registers[1]) == (1, 2, 3, 0xFF)
    assert bus.transfer("ISU1", 0x20, b"\xff", 3) == b"\x02\x03\xff"
    with pytest.raises(BusError, match="0x21"):
        bus.transfer("ISU1", 0x21, b"\x00", 1)
    with pytest.raises(UnknownPeripheralError, match="7-bit address"):
        bus.attach("ISU1", 0x03)
    with pytest.raises(PeripheralError, match="256 registers"):
        bus.attach("ISU1", 0x30, b"\0" * (REGISTERS + 1))
    for address in range(0x40, 0x40 + MAX_DEVICES_PER_BUS - 1):
        bus.attach("ISU1", address)
    with pytest.raises(PeripheralError, match="already has"):
        bus.attach("ISU1", 0x70)
    bus.detach("ISU1", 0x20)
    with pytest.raises(BusError):
        bus.registers("ISU1", 0x20)
    spi = RegisterBus(tmp_path / "spi.json", model, S)
    with pytest.raises(UnknownPeripheralError, match="chip select"):
        spi.attach("ISU1", 2)
    spi.attach("ISU1", 1)
    assert spi.snapshot()[0]["chip_select"] == 1


def _read_until(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n)
        if not chunk:
            break
        data += chunk
    return data


def test_uart_bridge_fans_out_bounds_clients_and_long_paths(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "uart-ISU0.sock"
    os_end, app_end = socket.socketpair()
    bridge = UartBridge(path, os_end, UartLimits(max_clients=2, buffer_bytes=8))
    bridge.start()
    one, two = connect_uart(path), connect_uart(path)
    three = connect_uart(path)
    deadline = time.monotonic() + 5
    while bridge.clients < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert bridge.clients == 2
    assert three.recv(8) == b""  # refused: over the client bound
    app_end.sendall(b"abc")
    assert _read_until(one, 3) == b"abc"
    assert _read_until(two, 3) == b"abc"
    one.sendall(b"xyz")
    assert _read_until(app_end, 3) == b"xyz"
    assert bridge.to_clients == 3
    app_end.close()  # the app closed the UART
    deadline = time.monotonic() + 5
    while bridge.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bridge.alive
    assert not path.exists()
    bridge.close()
    for sock in (one, two, three):
        sock.close()


def test_boot_process_prepares_the_board_the_os_reads(tmp_path: Path) -> None:
    from bastion.cli.device_run_cmds import prepare_peripherals
    from bastion.os.updates.system import load_board

    dev = tmp_path / "dev"
    Chip.manufacture(dev, model="tiny-emu")
    prepare_peripherals(dev)
    assert load_board(periph_dir(dev)).model.name == "tiny-emu"
    (periph_dir(dev) / "board.json").write_text('{"model": 5}')
    assert load_board(periph_dir(dev)).model.name == DEFAULT_MODEL  # unreadable: the default, logged
    prepare_peripherals(tmp_path / "no-chip")  # reported, never fatal to a boot


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=6), st.integers(0, 6)), max_size=8))
def test_register_device_behaves_as_a_pointer_and_256_registers(steps: list[tuple[bytes, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        bus = RegisterBus(Path(directory) / "i2c.json", get_model("mt3620-emu"), I2C)
        bus.attach("ISU0", 0x10)
        registers, pointer = bytearray(REGISTERS), 0
        for write, read in steps:
            if write:
                pointer = write[0]
                for byte in write[1:]:
                    registers[pointer] = byte
                    pointer = (pointer + 1) % REGISTERS
            expected = bytes(registers[(pointer + i) % REGISTERS] for i in range(read))
            pointer = (pointer + read) % REGISTERS
            assert bus.transfer("ISU0", 0x10, write, read) == expected
        assert bus.registers("ISU0", 0x10) == bytes(registers)
