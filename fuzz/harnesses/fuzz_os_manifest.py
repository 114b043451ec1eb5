"""Fuzz the runtime manifest inside OS and bootloader images (``OsManifest.from_json``).

Documented error: :class:`ImageArchiveError`. Also checked: an accepted manifest
has the field types the dataclass declares (the device compares versions and
security versions and hashes files by it).
"""

from __future__ import annotations

from bastion.images.errors import ImageArchiveError
from bastion.images.os_payload import BOOTLOADER_RUNTIME, OS_RUNTIME, OsManifest

SEEDS: list[bytes] = [
    OsManifest(version="1.0.0", security_version=1, files={"bastion/os/__main__.py": "ab" * 32}).to_json(),
    OsManifest(version="2.1.0", security_version=3, files={}, fault="fail-at-start").to_json(),
    OsManifest(
        version="1.0.0", security_version=0, entry=BOOTLOADER_RUNTIME.entry, name=BOOTLOADER_RUNTIME.name
    ).to_json(),
]


def test_one_input(data: bytes) -> None:
    """Parse ``data`` as an OS and as a bootloader manifest."""
    for kind in (OS_RUNTIME, BOOTLOADER_RUNTIME):
        try:
            manifest = OsManifest.from_json(data, kind)
        except ImageArchiveError:
            continue
        if (
            not isinstance(manifest.version, str)
            or type(manifest.security_version) is not int
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest.files.items())
            or not (manifest.fault is None or isinstance(manifest.fault, str))
        ):
            raise RuntimeError("OsManifest.from_json accepted a field of the wrong type")
