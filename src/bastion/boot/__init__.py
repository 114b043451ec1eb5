"""The boot chain: ROM and bootloader verify, measure (DICE) and start the OS.

Entry point: :func:`boot_device` runs the ROM in the caller's process and the
bootloader stage, from the measured bootloader image, in its own
(:mod:`bastion.boot.chain`); it returns a :class:`BootResult` or raises a
:class:`BootError` naming the failed stage and check. Factory and bench steps
live in :mod:`bastion.boot.vendor` (vendor CA and keys) and
:mod:`bastion.boot.factory` (manufacture, flash).
"""

from bastion.boot.chain import boot_device
from bastion.boot.errors import BootError
from bastion.boot.result import BootResult

__all__ = ["BootError", "BootResult", "boot_device"]
