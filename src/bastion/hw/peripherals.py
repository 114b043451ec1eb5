"""The emulated peripherals of a chip, as state files in ``DEV/periph/`` that anyone can watch.

The peripherals live outside ``chip/`` on purpose: the OS drives them (it may
not reach ``chip/``), and tests and users drive and observe them from outside
(``bastion device gpio --dir DEV``). Layout::

    DEV/periph/
        board.json        the chip model, written by the boot process at each boot
        gpio.json         pins an app opened (mode, output level, owner) and input levels set from outside
        adc.json          ADC channel values set from outside
        pwm.json          PWM channel states an app applied (period, duty, polarity, enabled, owner)
        i2c.json          register-file devices on the I2C masters (see bastion.hw.bus)
        spi.json          register-file devices on the SPI masters' chip selects
        uart-ISU0.sock    a UART an app has open, served by the OS (see bastion.hw.uart)

Every file is JSON, bounded, changed under a lock on the directory and
replaced atomically, so the OS and an outside writer never lose each other's
change. The directory belongs to the OS's user (the boot process hands it over),
so the OS can replace files that a tool running as root wrote.

A boot is a power-on reset: pins and PWM channels are released, while what the
outside world set (input levels, ADC values, bus devices) stays.

Example:
    >>> import tempfile, pathlib
    >>> board = Board.prepare(pathlib.Path(tempfile.mkdtemp()), get_model("mt3620-emu"))
    >>> board.gpio.open(8, "output", 1, owner="app")
    >>> board.gpio.read(8), board.gpio.read(12)
    (1, 1)
    >>> board.gpio.set_input(12, 0); board.gpio.read(12)
    0
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.hw._statefile import locked_dir, read_json, write_json
from bastion.hw.bus import RegisterBus
from bastion.hw.chipmodel import DEFAULT_MODEL, Block, ChipModel, PeripheralType, get_model
from bastion.hw.errors import PeripheralError, StateCorruptError, UnknownPeripheralError

__all__ = [
    "BOARD_FILE",
    "GPIO_MODES",
    "MAX_PWM_PERIOD_NS",
    "PERIPH_DIRNAME",
    "PWM_POLARITIES",
    "AdcState",
    "Board",
    "GpioState",
    "PwmChannel",
    "PwmState",
    "periph_dir",
]

#: The peripheral directory, under the device directory.
PERIPH_DIRNAME = "periph"
BOARD_FILE = "board.json"
GPIO_MODES = ("input", "output")
PWM_POLARITIES = ("normal", "inversed")
#: The longest PWM period the emulated controllers take (1 s).
MAX_PWM_PERIOD_NS = 1_000_000_000
#: Bound on an owner string stored in a state file (a component ID).
_MAX_OWNER_CHARS = 64


def periph_dir(dev_dir: Path) -> Path:
    """The peripheral directory of a device."""
    return dev_dir / PERIPH_DIRNAME


def _load(path: Path) -> dict[str, Any]:
    return read_json(path) if path.exists() else {}


def _level(value: object) -> int:
    if isinstance(value, bool) or value not in (0, 1):
        raise PeripheralError(f"a GPIO level is 0 or 1, not {value!r}"[:80])
    return 1 if value == 1 else 0


def _owner(value: str) -> str:
    if not value or len(value) > _MAX_OWNER_CHARS:
        raise PeripheralError("an owner is 1..64 characters")
    return value


class GpioState:
    """``gpio.json``: pins opened by apps, and input levels set from outside."""

    def __init__(self, path: Path, model: ChipModel) -> None:
        self.path = path
        self.model = model

    def _pin(self, pin: int) -> str:
        self.model.resolve(PeripheralType.GPIO, pin)
        return str(pin)

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        value = _load(self.path)
        pins, inputs = value.get("pins", {}), value.get("inputs", {})
        if not isinstance(pins, dict) or not isinstance(inputs, dict):
            raise StateCorruptError(f"{self.path.name} is malformed")
        return pins, inputs

    def _write(self, pins: dict[str, Any], inputs: dict[str, Any]) -> None:
        write_json(self.path, {"pins": pins, "inputs": inputs})

    def open(self, pin: int, mode: str, value: int, *, owner: str) -> None:
        """Configure ``pin`` for ``owner`` as an input or an output at ``value``.

        Raises:
            UnknownPeripheralError: the chip has no such pin.
            PeripheralError: the mode or level is wrong, or another owner holds the pin.
        """
        key = self._pin(pin)
        if mode not in GPIO_MODES:
            raise PeripheralError(f"a GPIO mode is one of {GPIO_MODES}")
        level = _level(value)
        with locked_dir(self.path.parent):
            pins, inputs = self._read()
            held = pins.get(key)
            if isinstance(held, dict) and held.get("owner") not in (None, owner):
                raise PeripheralError(f"GPIO {pin} is held by {held.get('owner')}")
            pins[key] = {"mode": mode, "value": level if mode == "output" else None, "owner": _owner(owner)}
            self._write(pins, inputs)

    def write(self, pin: int, value: int, *, owner: str) -> None:
        """Drive an output pin that ``owner`` opened.

        Raises:
            PeripheralError: the pin is not an output of ``owner``.
        """
        key, level = self._pin(pin), _level(value)
        with locked_dir(self.path.parent):
            pins, inputs = self._read()
            held = pins.get(key)
            if not isinstance(held, dict) or held.get("owner") != owner or held.get("mode") != "output":
                raise PeripheralError(f"GPIO {pin} is not an output opened by this app")
            held["value"] = level
            self._write(pins, inputs)

    def read(self, pin: int) -> int:
        """The pin's level: what an output drives, else the input level (the model's default if unset)."""
        key = self._pin(pin)
        pins, inputs = self._read()
        held = pins.get(key)
        if isinstance(held, dict) and held.get("mode") == "output" and held.get("value") in (0, 1):
            return int(held["value"])
        level = inputs.get(key, self.model.gpio_input_default)
        return level if level in (0, 1) else self.model.gpio_input_default

    def set_input(self, pin: int, value: int) -> None:
        """Set the level the outside world puts on ``pin`` (a button, a sensor line).

        Raises:
            PeripheralError: the pin is an output (an app drives it).
        """
        key, level = self._pin(pin), _level(value)
        with locked_dir(self.path.parent):
            pins, inputs = self._read()
            held = pins.get(key)
            if isinstance(held, dict) and held.get("mode") == "output":
                raise PeripheralError(f"GPIO {pin} is an output driven by {held.get('owner')}; it cannot be set")
            inputs[key] = level
            self._write(pins, inputs)

    def release(self, *, owner: str, pin: int | None = None) -> None:
        """Release one pin, or every pin, that ``owner`` holds."""
        with locked_dir(self.path.parent):
            pins, inputs = self._read()
            kept = {
                key: held
                for key, held in pins.items()
                if not (isinstance(held, dict) and held.get("owner") == owner and (pin is None or key == str(pin)))
            }
            if kept != pins:
                self._write(kept, inputs)

    def reset(self) -> None:
        """Power-on reset: release every pin (input levels stay)."""
        with locked_dir(self.path.parent):
            _, inputs = self._read() if self.path.exists() else ({}, {})
            self._write({}, inputs)

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per pin that is opened or has an input level set."""
        pins, inputs = self._read()
        rows = []
        for key in sorted({*pins, *inputs}, key=lambda k: int(k) if k.isdigit() else -1):
            if not key.isdigit():
                continue
            entry = pins.get(key)
            held: dict[str, Any] = entry if isinstance(entry, dict) else {}
            rows.append(
                {
                    "pin": int(key),
                    "mode": held.get("mode"),
                    "owner": held.get("owner"),
                    "value": self.read(int(key)),
                    "input": inputs.get(key),
                }
            )
        return rows


class AdcState:
    """``adc.json``: the value on each ADC channel, set from outside."""

    def __init__(self, path: Path, model: ChipModel) -> None:
        self.path = path
        self.model = model

    def _channel(self, controller: str, channel: int) -> Block:
        block = self.model.resolve(PeripheralType.ADC, controller).block
        if block is None or not 0 <= channel < block.channels:
            raise UnknownPeripheralError(f"{controller} has no channel {channel}")
        return block

    @property
    def max_value(self) -> int:
        """The largest sample (full scale)."""
        return int(2**self.model.adc_bits - 1)

    def set(self, controller: str, channel: int, value: int) -> None:
        """Put ``value`` (0..full scale) on a channel.

        Raises:
            UnknownPeripheralError: no such controller or channel.
            PeripheralError: the value is out of range.
        """
        block = self._channel(controller, channel)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= self.max_value:
            raise PeripheralError(f"an ADC value is 0..{self.max_value}")
        with locked_dir(self.path.parent):
            state = _load(self.path)
            channels = state.setdefault(block.name, {})
            if not isinstance(channels, dict):
                raise StateCorruptError(f"{self.path.name} is malformed")
            channels[str(channel)] = value
            write_json(self.path, state)

    def read(self, controller: str, channel: int) -> int:
        """Sample a channel (0 where nothing was set)."""
        block = self._channel(controller, channel)
        channels = _load(self.path).get(block.name, {})
        value = channels.get(str(channel), 0) if isinstance(channels, dict) else 0
        return value if isinstance(value, int) and 0 <= value <= self.max_value else 0

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per channel of every controller."""
        return [
            {"controller": block.name, "channel": channel, "value": self.read(block.name, channel)}
            for block in self.model.adcs
            for channel in range(block.channels)
        ]


@dataclass(frozen=True)
class PwmState:
    """What an app applies to a PWM channel (Azure Sphere's ``PwmState``)."""

    period_ns: int
    duty_ns: int
    polarity: str = "normal"
    enabled: bool = True

    def check(self) -> PwmState:
        """Return self if it is in bounds.

        Raises:
            PeripheralError: a field is out of bounds.
        """
        if not 1 <= self.period_ns <= MAX_PWM_PERIOD_NS:
            raise PeripheralError(f"a PWM period is 1..{MAX_PWM_PERIOD_NS} ns")
        if not 0 <= self.duty_ns <= self.period_ns:
            raise PeripheralError("a PWM duty cycle is 0..period ns")
        if self.polarity not in PWM_POLARITIES:
            raise PeripheralError(f"a PWM polarity is one of {PWM_POLARITIES}")
        return self


@dataclass(frozen=True)
class PwmChannel:
    """A PWM channel as observed from outside."""

    controller: str
    channel: int
    state: PwmState
    owner: str


class PwmStates:
    """``pwm.json``: the state each app applied to its PWM channels."""

    def __init__(self, path: Path, model: ChipModel) -> None:
        self.path = path
        self.model = model

    def _block(self, controller: str, channel: int) -> Block:
        block = self.model.resolve(PeripheralType.PWM, controller).block
        if block is None or not 0 <= channel < block.channels:
            raise UnknownPeripheralError(f"{controller} has no channel {channel}")
        return block

    def apply(self, controller: str, channel: int, state: PwmState, *, owner: str) -> None:
        """Apply ``state`` to a channel.

        Raises:
            UnknownPeripheralError: no such controller or channel.
            PeripheralError: the state is out of bounds.
        """
        block = self._block(controller, channel)
        state.check()
        with locked_dir(self.path.parent):
            value = _load(self.path)
            channels = value.setdefault(block.name, {})
            if not isinstance(channels, dict):
                raise StateCorruptError(f"{self.path.name} is malformed")
            channels[str(channel)] = {
                "period_ns": state.period_ns,
                "duty_ns": state.duty_ns,
                "polarity": state.polarity,
                "enabled": state.enabled,
                "owner": _owner(owner),
            }
            write_json(self.path, value)

    def release(self, *, owner: str, controller: str | None = None) -> None:
        """Forget the channels ``owner`` applied (of one controller, or all)."""
        with locked_dir(self.path.parent):
            value = _load(self.path)
            kept = {
                name: {
                    ch: row
                    for ch, row in channels.items()
                    if not (isinstance(row, dict) and row.get("owner") == owner and controller in (None, name))
                }
                for name, channels in value.items()
                if isinstance(channels, dict)
            }
            if kept != value:
                write_json(self.path, kept)

    def reset(self) -> None:
        """Power-on reset: every channel off."""
        with locked_dir(self.path.parent):
            write_json(self.path, {})

    def channels(self) -> list[PwmChannel]:
        """Every channel an app applied a state to."""
        out = []
        for name, channels in sorted(_load(self.path).items()):
            if not isinstance(channels, dict):
                continue
            for key, row in sorted(channels.items()):
                try:
                    state = PwmState(
                        int(row["period_ns"]), int(row["duty_ns"]), str(row["polarity"]), bool(row["enabled"])
                    )
                    out.append(PwmChannel(name, int(key), state, str(row["owner"])))
                except (KeyError, TypeError, ValueError):
                    continue
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per applied channel."""
        return [
            {
                "controller": c.controller,
                "channel": c.channel,
                "period_ns": c.state.period_ns,
                "duty_ns": c.state.duty_ns,
                "duty_percent": round(100 * c.state.duty_ns / c.state.period_ns, 2),
                "polarity": c.state.polarity,
                "enabled": c.state.enabled,
                "owner": c.owner,
            }
            for c in self.channels()
        ]


class Board:
    """All peripheral state of one chip in its peripheral directory.

    Args:
        directory: ``DEV/periph``.
        model: the chip model.
    """

    def __init__(self, directory: Path, model: ChipModel) -> None:
        self.directory = directory
        self.model = model
        self.gpio = GpioState(directory / "gpio.json", model)
        self.adc = AdcState(directory / "adc.json", model)
        self.pwm = PwmStates(directory / "pwm.json", model)
        self.i2c = RegisterBus(directory / "i2c.json", model, PeripheralType.I2C)
        self.spi = RegisterBus(directory / "spi.json", model, PeripheralType.SPI)

    @classmethod
    def prepare(cls, directory: Path, model: ChipModel, *, owner_uid: int | None = None) -> Board:
        """Power on: create the directory, record the model, reset what apps drive.

        Called by the boot process at each boot (it knows the chip's model).

        Args:
            directory: ``DEV/periph``.
            model: the chip's model.
            owner_uid: the OS's user, given the directory (the caller must be root).
        """
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        if owner_uid is not None:
            os.chown(directory, owner_uid, -1)
        board = cls(directory, model)
        write_json(directory / BOARD_FILE, {"model": model.name})
        board.gpio.reset()
        board.pwm.reset()
        for stale in directory.glob("uart-*.sock"):
            stale.unlink(missing_ok=True)
        return board

    @classmethod
    def load(cls, directory: Path) -> Board:
        """The board the boot process prepared (the default model if it recorded none).

        Raises:
            StateCorruptError: ``board.json`` is unreadable or names an unknown model.
        """
        path = directory / BOARD_FILE
        if not path.exists():
            return cls(directory, get_model(DEFAULT_MODEL))
        name = read_json(path).get("model")
        try:
            return cls(directory, get_model(name if isinstance(name, str) else ""))
        except UnknownPeripheralError as exc:
            raise StateCorruptError(f"{BOARD_FILE}: {exc}") from exc

    def uart_socket(self, isu: str) -> Path:
        """Where the OS serves an open UART (``uart-ISU0.sock``).

        Raises:
            UnknownPeripheralError: the chip has no such ISU.
        """
        name = self.model.resolve(PeripheralType.UART, isu).value
        return self.directory / f"uart-{name}.sock"

    def release(self, owner: str) -> None:
        """Release everything ``owner`` holds (its app stopped)."""
        self.gpio.release(owner=owner)
        self.pwm.release(owner=owner)
