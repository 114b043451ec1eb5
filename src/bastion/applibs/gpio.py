"""GPIO, as Azure Sphere's ``applibs/gpio.h``: open a pin as an output or an input, set and read it.

The pin is a number or a hardware-definition name; the app's manifest must
declare it in ``Gpio`` (else :class:`~bastion.applibs.errors.PermissionDeniedError`).

Example::

    from bastion.applibs import gpio
    led = gpio.open_as_output("$SAMPLE_LED", gpio.HIGH)
    button = gpio.open_as_input("$SAMPLE_BUTTON_1")
    led.set_value(gpio.LOW if button.get_value() == gpio.LOW else gpio.HIGH)
"""

from __future__ import annotations

from bastion.applibs._client import connection
from bastion.applibs._handle import PeripheralHandle, PeripheralId

__all__ = ["HIGH", "LOW", "Gpio", "open_as_input", "open_as_output"]

LOW = 0
HIGH = 1


class Gpio(PeripheralHandle):
    """An open GPIO pin."""

    _area = "gpio"

    def __init__(self, peripheral_id: PeripheralId, mode: str) -> None:
        super().__init__(peripheral_id)
        self.mode = mode

    def set_value(self, value: int) -> None:
        """Drive an output pin ``LOW`` (0) or ``HIGH`` (1)."""
        self._call("set", value=value)

    def get_value(self) -> int:
        """The pin's level (an output reads what it drives)."""
        return int(self._call("get")["value"])


def _open(peripheral_id: PeripheralId, mode: str, value: int) -> Gpio:
    connection().call("gpio.open", {"id": peripheral_id, "mode": mode, "value": value})
    return Gpio(peripheral_id, mode)


def open_as_output(peripheral_id: PeripheralId, value: int = LOW) -> Gpio:
    """Open a pin as an output at ``value`` (``GPIO_OpenAsOutput``)."""
    return _open(peripheral_id, "output", value)


def open_as_input(peripheral_id: PeripheralId) -> Gpio:
    """Open a pin as an input (``GPIO_OpenAsInput``)."""
    return _open(peripheral_id, "input", 0)
