"""I2C master, as Azure Sphere's ``applibs/i2c.h``: write, read, and write-then-read at an address.

Example::

    from bastion.applibs import i2c
    with i2c.open("ISU2") as bus:
        bus.write(0x48, b"\\x10\\x2a")             # register 0x10 := 0x2a
        value = bus.write_then_read(0x48, b"\\x10", 1)
"""

from __future__ import annotations

from bastion.applibs._client import connection
from bastion.applibs._handle import PeripheralHandle, PeripheralId, decode, encode

__all__ = ["I2cMaster", "open"]


class I2cMaster(PeripheralHandle):
    """An open I2C master (an ISU in its I2C role)."""

    _area = "i2c"

    def write(self, address: int, data: bytes) -> int:
        """Write ``data`` to the device at ``address``; returns the bytes written."""
        return int(self._call("transfer", address=address, write_b64=encode(data))["written"])

    def read(self, address: int, length: int) -> bytes:
        """Read ``length`` bytes from the device at ``address``."""
        return decode(self._call("transfer", address=address, read=length))

    def write_then_read(self, address: int, data: bytes, length: int) -> bytes:
        """Write ``data`` then read ``length`` bytes, in one transaction."""
        return decode(self._call("transfer", address=address, write_b64=encode(data), read=length))


def open(peripheral_id: PeripheralId) -> I2cMaster:  # noqa: A001 - Azure Sphere's name
    """Open an I2C master (``I2CMaster_Open``)."""
    connection().call("i2c.open", {"id": peripheral_id})
    return I2cMaster(peripheral_id)
