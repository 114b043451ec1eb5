"""PWM, as Azure Sphere's ``applibs/pwm.h``: apply a period, duty cycle and polarity to a channel.

Example::

    from bastion.applibs import pwm
    with pwm.open("PWM-CONTROLLER-0") as controller:
        controller.apply(0, period_ns=1_000_000, duty_ns=250_000)   # 1 kHz, 25 %
"""

from __future__ import annotations

from bastion.applibs._client import connection
from bastion.applibs._handle import PeripheralHandle, PeripheralId

__all__ = ["INVERSED", "NORMAL", "Pwm", "open"]

NORMAL = "normal"
INVERSED = "inversed"


class Pwm(PeripheralHandle):
    """An open PWM controller; ``channels`` says how many channels it has."""

    _area = "pwm"

    def __init__(self, peripheral_id: PeripheralId, channels: int) -> None:
        super().__init__(peripheral_id)
        self.channels = channels

    def apply(
        self, channel: int, *, period_ns: int, duty_ns: int, polarity: str = NORMAL, enabled: bool = True
    ) -> None:
        """Set a channel's state (``PWM_Apply``)."""
        self._call("apply", channel=channel, period_ns=period_ns, duty_ns=duty_ns, polarity=polarity, enabled=enabled)


def open(peripheral_id: PeripheralId) -> Pwm:  # noqa: A001 - Azure Sphere's name
    """Open a PWM controller (``PWM_Open``)."""
    result = connection().call("pwm.open", {"id": peripheral_id})
    return Pwm(peripheral_id, int(result["channels"]))
