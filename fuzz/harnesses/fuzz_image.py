"""Fuzz image package parsing and verification (:mod:`bastion.images.package`).

The input is a whole package file: ``inspect_image`` and ``verify_image`` (against
the harness key) read it, and an OS image's manifest is read without unpacking
(``read_os_manifest``), as ``POST /os-images`` and the device's update agent do.

Documented errors: :class:`ImageFormatError`, :class:`ImageSignatureError`,
:class:`ImagePayloadError`, and :class:`ImageArchiveError` for the archive inside.
Also checked: an accepted version is one spelling of a semantic version (ASCII,
no trailing newline), which the service and the device compare and look up.
"""

from __future__ import annotations

import hashlib
import io

from _images_common import APP_COMPONENT, PUBLIC, package, tar

from bastion.images.errors import ImageArchiveError, ImageFormatError, ImagePayloadError, ImageSignatureError
from bastion.images.os_payload import OsManifest, read_os_manifest
from bastion.images.package import ImageLimits, ImageType, inspect_image, verify_image
from bastion.images.semver import semver_key

_LIMITS = ImageLimits(max_header_bytes=4096, max_payload_bytes=64 * 1024, chunk_size=4096)
_MAIN = b"print('hello')\n"
_OS_MANIFEST = OsManifest(version="1.0.0", security_version=1, files={"main.py": hashlib.sha256(_MAIN).hexdigest()})
SEEDS: list[bytes] = [
    package(tar([("bastion-os.json", _OS_MANIFEST.to_json()), ("main.py", _MAIN)]), ImageType.OS),
    package(b"", ImageType.BOOTLOADER),
    package(b"not an archive", ImageType.APP, component=APP_COMPONENT, version="2.0.0-rc.1+build.5"),
]
MAX_LEN = 8 * 1024


def test_one_input(data: bytes) -> None:
    """Parse and verify ``data`` as an image package."""
    try:
        header = inspect_image(io.BytesIO(data), limits=_LIMITS)
    except ImageFormatError:
        return
    if not (header.version.isascii() and header.version.isprintable()):
        raise RuntimeError(f"the image header accepted the version {header.version!r}")
    semver_key(header.version)  # raises ValueError (a finding) if the two version parsers disagree
    try:
        if header.image_type is ImageType.OS:
            read_os_manifest(io.BytesIO(data), image_limits=_LIMITS)
    except (ImageFormatError, ImageArchiveError):
        pass
    try:
        verified = verify_image(io.BytesIO(data), [PUBLIC], limits=_LIMITS)
    except (ImageFormatError, ImageSignatureError, ImagePayloadError):
        return
    if verified != header:
        raise RuntimeError("verify_image and inspect_image read different headers from the same bytes")
