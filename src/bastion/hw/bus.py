"""I2C and SPI buses with emulated register-file devices, so a transfer does something checkable.

A register-file device holds :data:`REGISTERS` bytes and a register pointer,
like most I2C sensors and SPI EEPROMs:

* a write sets the pointer to its first byte, and stores the following bytes
  from there on (the pointer advancing, wrapping at the end);
* a read returns bytes from the pointer on (advancing it).

So ``write(b"\\x10\\xaa\\xbb")`` stores 0xAA in register 0x10 and 0xBB in 0x11,
and ``write_then_read(b"\\x10", 2)`` returns them. On I2C a device sits at a
7-bit address; on SPI at a chip select. Nothing attached: the transfer fails
with :class:`~bastion.hw.errors.BusError` (an I2C NAK).

Devices are attached from outside (``bastion device i2c --dir DEV ISU2 --attach 0x48``)
and their registers are in ``DEV/periph/i2c.json`` / ``spi.json`` (hex), so a
test can see what an app wrote.

Example:
    >>> import tempfile, pathlib
    >>> from bastion.hw.chipmodel import get_model
    >>> bus = RegisterBus(pathlib.Path(tempfile.mkdtemp()) / "i2c.json", get_model("mt3620-emu"), PeripheralType.I2C)
    >>> bus.attach("ISU2", 0x48)
    >>> bus.transfer("ISU2", 0x48, b"\\x10\\xaa\\xbb", 0)
    b''
    >>> bus.transfer("ISU2", 0x48, b"\\x10", 2).hex()
    'aabb'
"""

from __future__ import annotations

import binascii
from pathlib import Path
from typing import Any

from bastion.hw._statefile import locked_dir, read_json, write_json
from bastion.hw.chipmodel import ChipModel, PeripheralType
from bastion.hw.errors import BusError, PeripheralError, StateCorruptError, UnknownPeripheralError

__all__ = ["I2C_ADDRESSES", "MAX_DEVICES_PER_BUS", "MAX_TRANSFER_BYTES", "REGISTERS", "RegisterBus"]

#: Registers of one emulated device.
REGISTERS = 256
#: Bound on the bytes one transfer writes or reads.
MAX_TRANSFER_BYTES = 4096
#: Bound on the devices attached to one bus.
MAX_DEVICES_PER_BUS = 8
#: The 7-bit I2C addresses a device may take (0x00..0x07 and 0x78..0x7F are reserved).
I2C_ADDRESSES = range(0x08, 0x78)


class RegisterBus:
    """The register-file devices on every I2C (or SPI) master of a chip.

    Args:
        path: the state file (``i2c.json`` or ``spi.json``).
        model: the chip model.
        kind: :attr:`PeripheralType.I2C` or :attr:`PeripheralType.SPI`.
    """

    def __init__(self, path: Path, model: ChipModel, kind: PeripheralType) -> None:
        if kind not in (PeripheralType.I2C, PeripheralType.SPI):
            raise ValueError("a register bus is I2C or SPI")
        self.path = path
        self.model = model
        self.kind = kind

    def _where(self, isu: str, address: int) -> tuple[str, str]:
        name = str(self.model.resolve(self.kind, isu).value)
        valid = I2C_ADDRESSES if self.kind is PeripheralType.I2C else range(self.model.spi_chip_selects)
        if isinstance(address, bool) or not isinstance(address, int) or address not in valid:
            what = "7-bit address 0x08..0x77" if self.kind is PeripheralType.I2C else "chip select"
            raise UnknownPeripheralError(f"{address!r} is not a {what} of {name}"[:120])
        return name, str(address)

    def _load(self) -> dict[str, Any]:
        value = read_json(self.path) if self.path.exists() else {}
        if not all(isinstance(devices, dict) for devices in value.values()):
            raise StateCorruptError(f"{self.path.name} is malformed")
        return value

    @staticmethod
    def _registers(device: object) -> tuple[bytearray, int]:
        if not isinstance(device, dict):
            raise StateCorruptError("a bus device record is malformed")
        try:
            registers = bytearray(binascii.unhexlify(str(device.get("registers", ""))))
        except (binascii.Error, ValueError) as exc:
            raise StateCorruptError("a bus device's registers are not hex") from exc
        pointer = device.get("pointer", 0)
        if len(registers) != REGISTERS or not isinstance(pointer, int) or not 0 <= pointer < REGISTERS:
            raise StateCorruptError("a bus device record is malformed")
        return registers, pointer

    def attach(self, isu: str, address: int, registers: bytes = b"") -> None:
        """Attach a device (registers from ``registers``, zero-filled), replacing one already there.

        Raises:
            UnknownPeripheralError: no such master or address.
            PeripheralError: too many devices, or too many register bytes.
        """
        name, key = self._where(isu, address)
        if len(registers) > REGISTERS:
            raise PeripheralError(f"a device has {REGISTERS} registers")
        with locked_dir(self.path.parent):
            value = self._load()
            devices = value.setdefault(name, {})
            if key not in devices and len(devices) >= MAX_DEVICES_PER_BUS:
                raise PeripheralError(f"{name} already has {MAX_DEVICES_PER_BUS} devices")
            devices[key] = {"registers": registers.ljust(REGISTERS, b"\0").hex(), "pointer": 0}
            write_json(self.path, value)

    def detach(self, isu: str, address: int) -> None:
        """Remove a device (nothing happens if none is there)."""
        name, key = self._where(isu, address)
        with locked_dir(self.path.parent):
            value = self._load()
            if value.get(name, {}).pop(key, None) is not None:
                write_json(self.path, value)

    def registers(self, isu: str, address: int) -> bytes:
        """A device's registers.

        Raises:
            BusError: nothing is attached there.
        """
        name, key = self._where(isu, address)
        device = self._load().get(name, {}).get(key)
        if device is None:
            raise BusError(f"no device at {self._show(address)} on {name}")
        return bytes(self._registers(device)[0])

    def _show(self, address: int) -> str:
        return f"address {address:#04x}" if self.kind is PeripheralType.I2C else f"chip select {address}"

    def transfer(self, isu: str, address: int, write: bytes, read: int) -> bytes:
        """Write ``write`` (pointer, then data), then read ``read`` bytes from the pointer on.

        Raises:
            UnknownPeripheralError: no such master or address.
            PeripheralError: the transfer is over :data:`MAX_TRANSFER_BYTES`.
            BusError: nothing answers there.
        """
        name, key = self._where(isu, address)
        if len(write) > MAX_TRANSFER_BYTES or not 0 <= read <= MAX_TRANSFER_BYTES:
            raise PeripheralError(f"a transfer moves at most {MAX_TRANSFER_BYTES} bytes each way")
        with locked_dir(self.path.parent):
            value = self._load()
            device = value.get(name, {}).get(key)
            if device is None:
                raise BusError(f"no device answers at {self._show(address)} on {name}")
            registers, pointer = self._registers(device)
            if write:
                pointer = write[0] % REGISTERS
                for byte in write[1:]:
                    registers[pointer] = byte
                    pointer = (pointer + 1) % REGISTERS
            out = bytearray()
            for _ in range(read):
                out.append(registers[pointer])
                pointer = (pointer + 1) % REGISTERS
            value[name][key] = {"registers": registers.hex(), "pointer": pointer}
            write_json(self.path, value)
        return bytes(out)

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per attached device."""
        rows = []
        for name, devices in sorted(self._load().items()):
            for key, device in sorted(devices.items(), key=lambda item: int(item[0]) if item[0].isdigit() else -1):
                registers, pointer = self._registers(device)
                rows.append(
                    {
                        "master": name,
                        "address" if self.kind is PeripheralType.I2C else "chip_select": int(key),
                        "pointer": pointer,
                        "registers": registers.hex(),
                    }
                )
        return rows
