"""Chip models: which peripherals and real-time cores an emulated chip has, and their names.

A model is modelled on a real part. ``mt3620-emu`` follows the MediaTek MT3620
that Azure Sphere runs on: GPIOs by number, five ISUs (serial interface blocks,
each usable as one UART, I2C master or SPI master), an ADC controller with eight
channels, three PWM controllers with four channels each, and two real-time cores
(the MT3620's Cortex-M4F cores). Blocks share pins with GPIOs, as on the real
chip (ISU0 is GPIO 26..30, PWM-CONTROLLER-2 is GPIO 8..11, ...), so declaring
both is a conflict.

Manifest values follow Azure Sphere: a GPIO is a number, an ISU is ``"ISU0"``,
an ADC controller ``"ADC-CONTROLLER-0"``, a PWM controller ``"PWM-CONTROLLER-0"``;
or a ``$NAME`` from the model's hardware definition (the board's names, as in
Azure Sphere's ``HardwareDefinitions`` JSON: ``$SAMPLE_LED`` is GPIO 8).

Example:
    >>> model = get_model("mt3620-emu")
    >>> p = model.resolve(PeripheralType.GPIO, "$SAMPLE_LED")
    >>> p.label, sorted(p.claims)
    ('Gpio 8', ['GPIO8'])
    >>> sorted(model.resolve(PeripheralType.UART, "ISU0").claims)
    ['GPIO26', 'GPIO27', 'GPIO28', 'GPIO29', 'GPIO30', 'ISU0']
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion.hw.errors import UnknownPeripheralError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "Block",
    "ChipModel",
    "Peripheral",
    "PeripheralType",
    "get_model",
]


class PeripheralType(enum.StrEnum):
    """A kind of peripheral, spelled as its Azure Sphere manifest capability."""

    GPIO = "Gpio"
    UART = "Uart"
    I2C = "I2cMaster"
    SPI = "SpiMaster"
    ADC = "Adc"
    PWM = "Pwm"


#: The ISU roles: an ISU serves as exactly one of these at a time.
ISU_ROLES = (PeripheralType.UART, PeripheralType.I2C, PeripheralType.SPI)


@dataclass(frozen=True)
class Block:
    """A named peripheral block: an ISU, an ADC or a PWM controller.

    Attributes:
        name: its manifest value (``ISU0``, ``ADC-CONTROLLER-0``).
        index: its number (what a header constant would hold).
        pins: the GPIOs it shares.
        channels: ADC or PWM channels (0 for an ISU).
    """

    name: str
    index: int
    pins: tuple[int, ...]
    channels: int = 0


@dataclass(frozen=True)
class Peripheral:
    """A peripheral of a chip, resolved from a manifest or request value.

    Attributes:
        kind: its type.
        value: the raw value (an int for a GPIO, a block name otherwise).
        claims: what holding it takes exclusively (``GPIO8``, ``ISU0`` and its pins).
        block: the block, for anything but a GPIO.
    """

    kind: PeripheralType
    value: int | str
    claims: frozenset[str]
    block: Block | None = None

    @property
    def label(self) -> str:
        """How messages name it: ``Gpio 8``, ``Uart ISU0``."""
        return f"{self.kind.value} {self.value}"


def _gpio_claim(pin: int) -> str:
    return f"GPIO{pin}"


@dataclass(frozen=True)
class ChipModel:
    """What a chip model has.

    Attributes:
        name: the model's name (recorded in the chip at manufacture).
        description: one line for people.
        gpios: the GPIO numbers.
        isus: serial blocks (UART / I2C / SPI, one role each).
        adcs: ADC controllers.
        pwms: PWM controllers.
        rt_cores: real-time cores for ``RealTimeCapable`` apps.
        adc_bits: ADC resolution.
        adc_reference_mv: ADC reference voltage.
        spi_chip_selects: chip-select lines per SPI master.
        gpio_input_default: the level an input reads before anyone drives it (pull-ups).
        hardware_definitions: ``NAME`` -> (type, raw value), without the ``$``.
    """

    name: str
    description: str
    gpios: frozenset[int]
    isus: tuple[Block, ...]
    adcs: tuple[Block, ...]
    pwms: tuple[Block, ...]
    rt_cores: int
    adc_bits: int = 12
    adc_reference_mv: int = 2500
    spi_chip_selects: int = 2
    gpio_input_default: int = 1
    hardware_definitions: Mapping[str, tuple[PeripheralType, int | str]] = field(default_factory=dict)

    def blocks(self, kind: PeripheralType) -> tuple[Block, ...]:
        """The blocks that can serve as ``kind`` (none for a GPIO)."""
        if kind in ISU_ROLES:
            return self.isus
        if kind is PeripheralType.ADC:
            return self.adcs
        if kind is PeripheralType.PWM:
            return self.pwms
        return ()

    def resolve(self, kind: PeripheralType, value: object) -> Peripheral:
        """Resolve a manifest or request value (a raw value or a ``$NAME``) to a peripheral.

        Raises:
            UnknownPeripheralError: the chip has no such peripheral, or the name is of another type.
        """
        shown = repr(value) if not isinstance(value, str) else value
        if isinstance(value, str) and value.startswith("$"):
            definition = self.hardware_definitions.get(value[1:])
            if definition is None:
                raise UnknownPeripheralError(f"{value} is not in the {self.name} hardware definition")
            defined_kind, raw = definition
            if defined_kind is not kind:
                raise UnknownPeripheralError(f"{value} is a {defined_kind.value}, not a {kind.value}")
            return self.resolve(kind, raw)
        if kind is PeripheralType.GPIO:
            if not isinstance(value, int) or isinstance(value, bool) or value not in self.gpios:
                raise UnknownPeripheralError(f"the {self.name} chip has no GPIO {shown}")
            return Peripheral(kind, value, frozenset({_gpio_claim(value)}))
        for block in self.blocks(kind):
            if value == block.name:
                claims = frozenset({block.name, *(_gpio_claim(pin) for pin in block.pins)})
                return Peripheral(kind, block.name, claims, block)
        names = ", ".join(block.name for block in self.blocks(kind)) or "none"
        raise UnknownPeripheralError(f"the {self.name} chip has no {kind.value} {shown} (it has {names})")

    def to_json(self) -> dict[str, object]:
        """A description for ``device info`` and the peripheral CLI."""
        return {
            "name": self.name,
            "description": self.description,
            "gpios": sorted(self.gpios),
            "isus": [block.name for block in self.isus],
            "adcs": {block.name: block.channels for block in self.adcs},
            "pwms": {block.name: block.channels for block in self.pwms},
            "rt_cores": self.rt_cores,
            "hardware_definitions": {
                f"${name}": {"type": kind.value, "value": raw}
                for name, (kind, raw) in sorted(self.hardware_definitions.items())
            },
        }


_MODEL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def _range(start: int, count: int) -> tuple[int, ...]:
    return tuple(range(start, start + count))


_G, _U, _I, _S, _A, _P = (
    PeripheralType.GPIO,
    PeripheralType.UART,
    PeripheralType.I2C,
    PeripheralType.SPI,
    PeripheralType.ADC,
    PeripheralType.PWM,
)

#: The MT3620 as Azure Sphere's reference board (RDB) exposes it.
MT3620_EMU = ChipModel(
    name="mt3620-emu",
    description="MT3620-like: GPIO 0..75, ISU0..ISU4, 1 ADC (8 ch), 3 PWM (4 ch each), 2 real-time cores",
    gpios=frozenset(range(76)),
    isus=(
        Block("ISU0", 0, _range(26, 5)),
        Block("ISU1", 1, _range(31, 5)),
        Block("ISU2", 2, _range(36, 5)),
        Block("ISU3", 3, _range(66, 5)),
        Block("ISU4", 4, _range(71, 5)),
    ),
    adcs=(Block("ADC-CONTROLLER-0", 0, _range(41, 8), channels=8),),
    pwms=(
        Block("PWM-CONTROLLER-0", 0, _range(0, 4), channels=4),
        Block("PWM-CONTROLLER-1", 1, _range(4, 4), channels=4),
        Block("PWM-CONTROLLER-2", 2, _range(8, 4), channels=4),
    ),
    rt_cores=2,
    hardware_definitions={
        # The reference board's LEDs and buttons (LED 1 is an RGB LED on GPIO 8, 9, 10).
        "SAMPLE_LED": (_G, 8),
        "SAMPLE_RGBLED_RED": (_G, 8),
        "SAMPLE_RGBLED_GREEN": (_G, 9),
        "SAMPLE_RGBLED_BLUE": (_G, 10),
        "SAMPLE_BUTTON_1": (_G, 12),
        "SAMPLE_BUTTON_2": (_G, 13),
        "SAMPLE_LED_2": (_G, 15),
        "SAMPLE_UART_LOOPBACK": (_U, "ISU0"),
        "SAMPLE_SPI": (_S, "ISU1"),
        "SAMPLE_I2C": (_I, "ISU2"),
        "SAMPLE_POTENTIOMETER_ADC_CONTROLLER": (_A, "ADC-CONTROLLER-0"),
        "SAMPLE_LED_PWM_CONTROLLER": (_P, "PWM-CONTROLLER-2"),
        **{f"MT3620_GPIO{n}": (_G, n) for n in range(76)},
        **{
            f"MT3620_ISU{n}_{role}": (kind, f"ISU{n}")
            for n in range(5)
            for role, kind in (("UART", _U), ("I2C", _I), ("SPI", _S))
        },
        "MT3620_ADC_CONTROLLER0": (_A, "ADC-CONTROLLER-0"),
        **{f"MT3620_PWM_CONTROLLER{n}": (_P, f"PWM-CONTROLLER-{n}") for n in range(3)},
    },
)

#: A small part with one real-time core, to show that cores and blocks are per model.
TINY_EMU = ChipModel(
    name="tiny-emu",
    description="small: GPIO 0..15, ISU0, 1 ADC (4 ch), 1 PWM (2 ch), 1 real-time core",
    gpios=frozenset(range(16)),
    isus=(Block("ISU0", 0, _range(10, 4)),),
    adcs=(Block("ADC-CONTROLLER-0", 0, _range(4, 4), channels=4),),
    pwms=(Block("PWM-CONTROLLER-0", 0, _range(0, 2), channels=2),),
    rt_cores=1,
    adc_bits=10,
    adc_reference_mv=3300,
    hardware_definitions={
        "SAMPLE_LED": (_G, 8),
        "SAMPLE_BUTTON_1": (_G, 9),
        "SAMPLE_UART_LOOPBACK": (_U, "ISU0"),
    },
)

#: The models a chip can be manufactured as, by name.
MODELS: Mapping[str, ChipModel] = {model.name: model for model in (MT3620_EMU, TINY_EMU)}
#: The model of a chip that recorded none (made before models existed).
DEFAULT_MODEL = MT3620_EMU.name


def get_model(name: str) -> ChipModel:
    """The model called ``name``.

    Raises:
        UnknownPeripheralError: there is no such model.
    """
    model = MODELS.get(name) if _MODEL_NAME.fullmatch(name or "") else None
    if model is None:
        raise UnknownPeripheralError(f"unknown chip model {name[:40]!r} (known: {', '.join(sorted(MODELS))})")
    return model
