"""Drive and watch a device's emulated peripherals from outside: ``device gpio/uart/adc/pwm/i2c/spi``.

These are the bench instruments of the emulated chip. They read and write
``DEV/periph/`` (see :mod:`bastion.hw.peripherals`) while the device runs:
press a button (``device gpio --dir DEV --set 12=0``), watch an LED, put a
voltage on an ADC channel, attach an I2C sensor, or talk to a UART an app has
open (``device uart --dir DEV ISU0``).
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.apps import device_app
from bastion.cli.output import JsonOption, emit_object, emit_table, fail

__all__ = ["adc_cmd", "gpio_cmd", "i2c_cmd", "peripherals_cmd", "pwm_cmd", "spi_cmd", "uart_cmd"]

DevDirOption = Annotated[Path, typer.Option("--dir", help="The device directory.")]
#: Bytes moved per read by ``device uart``.
UART_CHUNK = 4096


def _board(dev_dir: Path) -> Any:
    from bastion.hw.chip import Chip
    from bastion.hw.errors import ChipNotFoundError, HwError
    from bastion.hw.peripherals import Board, periph_dir

    try:
        model = Chip.open(dev_dir).model()
    except ChipNotFoundError:
        fail(f"no chip in {dev_dir}", hint="manufacture one with `bastion device manufacture`")
    except HwError as exc:
        fail(f"the chip is unreadable: {exc}")
    directory = periph_dir(dev_dir)
    directory.mkdir(mode=0o755, exist_ok=True)
    return Board(directory, model)


def _hw_errors() -> tuple[type[Exception], ...]:
    from bastion.hw.errors import HwError

    return (HwError, OSError)


def _split(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        fail(f"{what} {text!r} is not NAME=VALUE", hint=f"for example --set {'12=0' if what == 'gpio' else 'X=1'}")
    return key.strip(), value.strip()


def _number(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        fail(f"{what} {text!r} is not a number", hint="use decimal or 0x hex")


@device_app.command("peripherals")
def peripherals_cmd(dev_dir: DevDirOption, as_json: JsonOption = False) -> None:
    """Show the chip model: its GPIOs, ISUs, ADC and PWM controllers, real-time cores and $NAMEs."""
    board = _board(dev_dir)
    described = board.model.to_json()
    if as_json:
        emit_object(described, as_json=True)
        return
    names = described.pop("hardware_definitions")
    gpios = described.pop("gpios")
    described["gpios"] = f"{gpios[0]}..{gpios[-1]}" if gpios else "none"
    described["names"] = ", ".join(n for n in names if not n.startswith("$MT3620_")) or "none"
    emit_object(described, as_json=False, title=f"chip model {board.model.name}")


@device_app.command("gpio")
def gpio_cmd(
    dev_dir: DevDirOption,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Put a level on an input: PIN=0|1 (PIN a number or $NAME); repeatable."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the GPIOs apps opened (mode, level, owner) and the input levels; set input levels."""
    from bastion.hw.chipmodel import PeripheralType

    board = _board(dev_dir)
    for item in set_ or []:
        name, level = _split(item, "gpio")
        try:
            pin = board.model.resolve(PeripheralType.GPIO, name if name.startswith("$") else _number(name, "pin"))
            board.gpio.set_input(int(pin.value), _number(level, "level"))
        except _hw_errors() as exc:
            fail(f"cannot set {name}: {exc}", hint="set inputs only; an output is driven by its app")
    try:
        rows = board.gpio.snapshot()
    except _hw_errors() as exc:
        fail(f"cannot read the GPIO state: {exc}")
    names: dict[int, list[str]] = {}
    for name, (kind, value) in board.model.hardware_definitions.items():
        if kind is PeripheralType.GPIO and not name.startswith("MT3620_"):
            names.setdefault(int(value), []).append(f"${name}")
    for row in rows:
        row["names"] = " ".join(sorted(names.get(row["pin"], [])))
    emit_table(rows, ["pin", "names", "mode", "value", "input", "owner"], as_json=as_json, title="GPIO")


@device_app.command("adc")
def adc_cmd(
    dev_dir: DevDirOption,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Put a value on a channel: CONTROLLER:CHANNEL=VALUE (or CHANNEL=VALUE)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show and set the values on the ADC channels."""
    board = _board(dev_dir)
    for item in set_ or []:
        where, value = _split(item, "adc")
        controller, _, channel = where.rpartition(":")
        controller = controller or (board.model.adcs[0].name if board.model.adcs else "")
        try:
            board.adc.set(controller, _number(channel, "channel"), _number(value, "value"))
        except _hw_errors() as exc:
            fail(f"cannot set {where}: {exc}", hint=f"values are 0..{board.adc.max_value}")
    emit_table(board.adc.snapshot(), ["controller", "channel", "value"], as_json=as_json, title="ADC")


@device_app.command("pwm")
def pwm_cmd(dev_dir: DevDirOption, as_json: JsonOption = False) -> None:
    """Show the PWM channels apps applied a state to (period, duty cycle, polarity, owner)."""
    board = _board(dev_dir)
    try:
        rows = board.pwm.snapshot()
    except _hw_errors() as exc:
        fail(f"cannot read the PWM state: {exc}")
    columns = ["controller", "channel", "period_ns", "duty_ns", "duty_percent", "polarity", "enabled", "owner"]
    emit_table(rows, columns, as_json=as_json, title="PWM")


def _bus_cmd(
    kind: str, dev_dir: Path, master: str | None, *, attach: list[str], detach: list[str], as_json: bool
) -> None:
    board = _board(dev_dir)
    bus = board.i2c if kind == "i2c" else board.spi
    where = "address" if kind == "i2c" else "chip_select"
    if (attach or detach) and master is None:
        fail("name the master to change", hint=f"for example `bastion device {kind} --dir DEV ISU2 --attach 0x48`")
    try:
        for item in attach:
            address, _, registers = item.partition("=")
            bus.attach(str(master), _number(address, where), bytes.fromhex(registers))
        for item in detach:
            bus.detach(str(master), _number(item, where))
        rows = [r for r in bus.snapshot() if master is None or r["master"] == master]
    except ValueError as exc:
        fail(f"registers must be hex: {exc}")
    except _hw_errors() as exc:
        fail(str(exc), hint=f"masters are {', '.join(b.name for b in board.model.isus)}")
    emit_table(rows, ["master", where, "pointer", "registers"], as_json=as_json, title=kind.upper())


MasterArgument = Annotated[str | None, typer.Argument(help="The ISU, e.g. ISU2 (default: all).")]


@device_app.command("i2c")
def i2c_cmd(
    dev_dir: DevDirOption,
    master: MasterArgument = None,
    attach: Annotated[
        list[str] | None, typer.Option("--attach", help="Attach a register device: ADDRESS[=HEXREGISTERS].")
    ] = None,
    detach: Annotated[list[str] | None, typer.Option("--detach", help="Remove the device at ADDRESS.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show, attach and remove the emulated register devices on the I2C masters."""
    _bus_cmd("i2c", dev_dir, master, attach=attach or [], detach=detach or [], as_json=as_json)


@device_app.command("spi")
def spi_cmd(
    dev_dir: DevDirOption,
    master: MasterArgument = None,
    attach: Annotated[
        list[str] | None, typer.Option("--attach", help="Attach a register device: CHIPSELECT[=HEXREGISTERS].")
    ] = None,
    detach: Annotated[list[str] | None, typer.Option("--detach", help="Remove the device at CHIPSELECT.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show, attach and remove the emulated register devices on the SPI masters' chip selects."""
    _bus_cmd("spi", dev_dir, master, attach=attach or [], detach=detach or [], as_json=as_json)


@device_app.command("uart")
def uart_cmd(
    dev_dir: DevDirOption,
    isu: Annotated[str, typer.Argument(help="The UART's ISU, e.g. ISU0, or its $NAME.")],
    send: Annotated[str | None, typer.Option("--send", help="Send this text (then read for --seconds).")] = None,
    seconds: Annotated[
        float | None, typer.Option("--seconds", help="Stop after this long (default: until end of input).")
    ] = None,
) -> None:
    """Attach the terminal to a UART an app has open: what you type goes to the app, what it writes is shown."""
    from bastion.hw.chipmodel import PeripheralType
    from bastion.hw.uart import connect_uart

    board = _board(dev_dir)
    try:
        name = str(board.model.resolve(PeripheralType.UART, isu).value)
        sock = connect_uart(board.uart_socket(name))
    except _hw_errors() as exc:
        fail(f"cannot attach to {isu}: {exc}", hint="an app must have the UART open (applibs uart.open)")
    deadline = None if seconds is None else time.monotonic() + seconds
    with sock:
        if send is not None:
            sock.sendall(send.encode())
        _bridge(sock, stdin=send is None, deadline=deadline)


def _bridge(sock: Any, *, stdin: bool, deadline: float | None) -> None:
    """Copy socket -> stdout (and stdin -> socket) until EOF or the deadline."""
    out = sys.stdout.buffer
    sources = [sock] + ([sys.stdin] if stdin else [])
    while sources:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            return
        ready, _, _ = select.select(sources, [], [], wait)
        for source in ready:
            if source is sock:
                data = sock.recv(UART_CHUNK)
                if not data:
                    return  # the app closed the UART
                out.write(data)
                out.flush()
            else:
                data = os.read(sys.stdin.fileno(), UART_CHUNK)
                if not data:
                    sources.remove(sys.stdin)
                    if deadline is None:
                        return
                    continue
                sock.sendall(data)
