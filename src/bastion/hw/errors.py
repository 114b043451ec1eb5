"""Exceptions raised by :mod:`bastion.hw`, the emulated chip.

The tree::

    HwError
    ├── ChipError                 the device directory as a whole
    │   ├── ChipNotFoundError     no manufactured chip in the directory
    │   └── ChipExistsError       manufacture refused: a chip is already there
    ├── FuseError                 the fuse bank
    │   ├── FuseWriteError        a write-once fuse is already burned, or the
    │   │                         lifecycle would move backwards
    │   └── CounterRollbackError  an anti-rollback counter would go down
    ├── FlashError                flash partitions and the boot state
    │   ├── PartitionEmptyError   reading a partition that holds nothing
    │   └── PartitionSizeError    data larger than the partition
    ├── PeripheralError           the emulated peripherals (DEV/periph)
    │   ├── UnknownPeripheralError  no such chip model, peripheral, channel or name
    │   └── BusError              nothing answers at an I2C address or SPI chip select
    └── StateCorruptError         a state file (fuses, boot state, UDS, cert) is
                                  unreadable, malformed or over its size bound

Messages name the file or fuse concerned; none carries secret material.
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "ChipError",
    "ChipExistsError",
    "ChipNotFoundError",
    "CounterRollbackError",
    "FlashError",
    "FuseError",
    "FuseWriteError",
    "HwError",
    "PartitionEmptyError",
    "PartitionSizeError",
    "PeripheralError",
    "StateCorruptError",
    "UnknownPeripheralError",
]


class HwError(Exception):
    """Root of all errors raised by :mod:`bastion.hw`."""


class ChipError(HwError):
    """The device directory does not hold a usable chip."""


class ChipNotFoundError(ChipError):
    """No manufactured chip in the device directory."""


class ChipExistsError(ChipError):
    """A chip already exists where one would be manufactured."""


class FuseError(HwError):
    """A fuse operation was refused."""


class FuseWriteError(FuseError):
    """A write-once fuse is already burned, or the lifecycle would move backwards."""


class CounterRollbackError(FuseError):
    """An anti-rollback counter would decrease."""


class FlashError(HwError):
    """A flash operation was refused."""


class PartitionEmptyError(FlashError):
    """The partition holds no data."""


class PartitionSizeError(FlashError):
    """The data does not fit in the partition."""


class PeripheralError(HwError):
    """A peripheral operation was refused."""


class UnknownPeripheralError(PeripheralError):
    """The chip (model) has no such peripheral, channel, hardware-definition name or model."""


class BusError(PeripheralError):
    """No device answers at the I2C address or SPI chip select."""


class StateCorruptError(HwError):
    """A persisted state file is unreadable, malformed, or over its size bound."""
