"""The files the boot supervisor hands to the OS, each by an explicit path.

The OS runs in a mount namespace without ``DEV/chip`` and ``DEV/flash``
(docs/adr/0010-os-process-separation.md), so it derives no path from another:
the supervisor names each one on the OS's command line (:func:`bastion.os.runtime.main`)::

    --app-store PATH     the app store directory, read-write (DEV/apps)
    --boot-config PATH   the bootloader partition, read-only: the pinned OS-publisher keys
    --os-image PATH      the running OS image, read-only: the base of a delta update
    --periph-dir PATH    the emulated peripherals, read-write (DEV/periph)

Example:
    >>> OsPaths(app_store=Path("/d/apps")).os_image is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["OsPaths"]


@dataclass(frozen=True)
class OsPaths:
    """Where the OS's update agent and app manager find their files.

    Attributes:
        app_store: the app store directory (the OS installs apps here).
        boot_config: the bootloader partition file (pinned OS-publisher keys),
            if given; without it every OS update is refused.
        os_image: the image of the running OS (the delta base), if given;
            without it OS updates download the full image.
        periph_dir: the emulated peripherals (``DEV/periph``: the chip model and
            the peripheral state), if given; without it apps find none.
    """

    app_store: Path
    boot_config: Path | None = None
    os_image: Path | None = None
    periph_dir: Path | None = None
