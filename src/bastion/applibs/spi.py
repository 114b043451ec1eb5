"""SPI master, as Azure Sphere's ``applibs/spi.h``: transfers to the device on a chip select.

Example::

    from bastion.applibs import spi
    with spi.open("ISU1", chip_select=0) as flash:
        flash.write(b"\\x00hello")                 # registers 0.. := b"hello"
        data = flash.write_then_read(b"\\x00", 5)
"""

from __future__ import annotations

from bastion.applibs._client import connection
from bastion.applibs._handle import PeripheralHandle, PeripheralId, decode, encode

__all__ = ["SpiMaster", "open"]


class SpiMaster(PeripheralHandle):
    """An open SPI master (an ISU in its SPI role), bound to one chip select."""

    _area = "spi"

    def __init__(self, peripheral_id: PeripheralId, chip_select: int) -> None:
        super().__init__(peripheral_id)
        self.chip_select = chip_select

    def transfer(self, write: bytes = b"", read: int = 0) -> bytes:
        """Write ``write``, then read ``read`` bytes (``SPIMaster_TransferSequential``)."""
        args: dict[str, object] = {"chip_select": self.chip_select, "read": read}
        if write:
            args["write_b64"] = encode(write)
        return decode(self._call("transfer", **args))

    def write(self, data: bytes) -> int:
        """Write ``data``; returns its length."""
        self.transfer(data)
        return len(data)

    def write_then_read(self, data: bytes, length: int) -> bytes:
        """Write ``data`` then read ``length`` bytes."""
        return self.transfer(data, length)


def open(peripheral_id: PeripheralId, chip_select: int = 0) -> SpiMaster:  # noqa: A001 - Azure Sphere's name
    """Open an SPI master for one chip select (``SPIMaster_Open``)."""
    connection().call("spi.open", {"id": peripheral_id})
    return SpiMaster(peripheral_id, chip_select)
