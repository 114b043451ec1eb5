"""The OS's part of an emulated device's directory.

::

    DEV/os-state/   the OS's state (TLS key, certificate, logs, queue, staging)
    DEV/apps/       the app store: installed app images, written by the OS
    DEV/periph/     emulated peripherals, when the chip model has them
    DEV/run/        unpacked, verified OS images (written by boot)
    DEV/chip/, DEV/flash/   boot and monitor only: not in the OS's namespace

The app store used to be ``DEV/flash/apps``; the OS runs without ``DEV/flash``
now (docs/adr/0010-os-process-separation.md), so :func:`migrate_app_store`
moves an old device's store once, before the OS starts.

Example:
    >>> app_store_dir(Path("/d"))
    PosixPath('/d/apps')
"""

from __future__ import annotations

import os
from pathlib import Path

from bastion.hw.peripherals import PERIPH_DIRNAME, periph_dir

__all__ = [
    "APP_STORE_DIRNAME",
    "LEGACY_APP_STORE",
    "OS_STATE_DIRNAME",
    "PERIPH_DIRNAME",
    "app_store_dir",
    "migrate_app_store",
    "os_state_dir",
    "periph_dir",
    "readable_app_store",
]

OS_STATE_DIRNAME = "os-state"
APP_STORE_DIRNAME = "apps"
#: Where the app store was before the OS lost sight of the flash directory.
LEGACY_APP_STORE = Path("flash") / "apps"


def os_state_dir(dev_dir: Path) -> Path:
    """The OS's state directory."""
    return dev_dir / OS_STATE_DIRNAME


def app_store_dir(dev_dir: Path) -> Path:
    """The app store."""
    return dev_dir / APP_STORE_DIRNAME


def migrate_app_store(dev_dir: Path) -> bool:
    """Move ``DEV/flash/apps`` to ``DEV/apps`` if only the old one exists.

    Returns:
        Whether it moved (a rename: atomic, on the same file system).

    Raises:
        OSError: the rename failed.
    """
    old, new = dev_dir / LEGACY_APP_STORE, app_store_dir(dev_dir)
    if os.path.lexists(new) or not old.is_dir() or old.is_symlink():
        return False
    old.rename(new)
    return True


def readable_app_store(dev_dir: Path) -> Path:
    """The app store a host command reads: ``DEV/apps``, or an old device's store not moved yet."""
    store = app_store_dir(dev_dir)
    return store if store.is_dir() else dev_dir / LEGACY_APP_STORE
