"""ADC, as Azure Sphere's ``applibs/adc.h``: sample a channel of an ADC controller.

Example::

    from bastion.applibs import adc
    with adc.open("ADC-CONTROLLER-0") as controller:
        raw = controller.sample(0)
        millivolts = controller.millivolts(raw)
"""

from __future__ import annotations

from bastion.applibs._client import connection
from bastion.applibs._handle import PeripheralHandle, PeripheralId

__all__ = ["Adc", "open"]


class Adc(PeripheralHandle):
    """An open ADC controller.

    Attributes:
        channels: how many channels it has.
        bits: its resolution (``ADC_GetSampleBitCount``).
        reference_mv: its reference voltage in millivolts.
    """

    _area = "adc"

    def __init__(self, peripheral_id: PeripheralId, channels: int, bits: int, reference_mv: int) -> None:
        super().__init__(peripheral_id)
        self.channels, self.bits, self.reference_mv = channels, bits, reference_mv

    def sample(self, channel: int) -> int:
        """One sample of ``channel`` (``ADC_Poll``), 0 .. 2**bits - 1."""
        return int(self._call("sample", channel=channel)["value"])

    def millivolts(self, raw: int) -> float:
        """A sample as millivolts."""
        return float(raw * self.reference_mv) / float(2**self.bits - 1)


def open(peripheral_id: PeripheralId) -> Adc:  # noqa: A001 - Azure Sphere's name
    """Open an ADC controller (``ADC_Open``)."""
    result = connection().call("adc.open", {"id": peripheral_id})
    return Adc(peripheral_id, int(result["channels"]), int(result["bits"]), int(result["reference_mv"]))
