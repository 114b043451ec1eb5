"""The boot chain: ROM and bootloader verify, measure (DICE) and start the OS.

Entry point: :func:`bastion.boot.bootloader.boot_device` returns a
:class:`bastion.boot.result.BootResult` or raises a
:class:`bastion.boot.errors.BootError` naming the failed stage and check.
Factory and bench steps live in :mod:`bastion.boot.vendor` (vendor CA and keys)
and :mod:`bastion.boot.factory` (manufacture, flash).
"""
