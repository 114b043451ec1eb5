"""The emulated chip: UDS, fuses, flash partitions and a TRNG, in a device directory.

Public API::

    Chip.manufacture(dev_dir) / Chip.open(dev_dir)
    chip.fuses: FuseBank    chip.flash: Flash    chip.trng: Trng

See :mod:`bastion.hw.chip` for the directory layout and :mod:`bastion.hw.errors`
for the exception tree.
"""

from bastion.hw.chip import Chip
from bastion.hw.flash import PARTITION_SIZES, BootState, Flash, Partition, Slot
from bastion.hw.fuses import FuseBank, FuseState, Lifecycle
from bastion.hw.trng import OsTrng, Trng

__all__ = [
    "PARTITION_SIZES",
    "BootState",
    "Chip",
    "Flash",
    "FuseBank",
    "FuseState",
    "Lifecycle",
    "OsTrng",
    "Partition",
    "Slot",
    "Trng",
]
