"""Fuzz the OS and app payload archives (:mod:`bastion.images.os_payload`, :mod:`bastion.images.app_build`).

The input (after a selector byte) is the tar payload; the harness signs it into
an image package with the harness key, as a publisher would, and then unpacks it
the way the device does after verifying the image: ``unpack_os_stream`` (OS),
``read_payload_file`` (one file of an OS image), or ``unpack_app_payload`` (app),
into a scratch directory. A signed image is exactly what a compromised or
careless publisher can produce, so nothing in it may escape the extraction
directory or raise anything but the documented errors.

Documented errors: :class:`ImageArchiveError` and :class:`ImageFormatError`.
"""

from __future__ import annotations

import hashlib
import io
import os

from _images_common import APP_COMPONENT, package, tar
from _scratch import scratch_dir

from bastion.images.app_build import AppArchiveLimits, unpack_app_payload
from bastion.images.errors import ImageArchiveError, ImageFormatError
from bastion.images.os_payload import OS_RUNTIME, OsArchiveLimits, OsManifest, read_payload_file, unpack_os_stream
from bastion.images.package import ImageType

_SCRATCH = scratch_dir("bastion-fuzz-archive-")
_OS_LIMITS = OsArchiveLimits()
_APP_LIMITS = AppArchiveLimits(max_members=64, max_member_bytes=64 * 1024, max_total_bytes=256 * 1024)
_MAIN = b"print('hello')\n"
_OS_MANIFEST = OsManifest(
    version="1.0.0", security_version=1, files={"bastion/os/__main__.py": hashlib.sha256(_MAIN).hexdigest()}
)
_APP_MANIFEST = (
    b'{"SchemaVersion": 1, "Name": "hello", "ComponentId": "' + APP_COMPONENT.encode() + b'", '
    b'"EntryPoint": "main.py", "CmdArgs": [], "ApplicationType": "Default", "Version": "1.0.0", '
    b'"Capabilities": {"AllowedTcpServerPorts": [8080]}}'
)
#: First byte of an input: which unpacker reads the rest.
_OS, _OS_FILE, _APP = 0, 1, 2
SEEDS: list[bytes] = [
    bytes([_OS]) + tar([("bastion-os.json", _OS_MANIFEST.to_json()), ("bastion/os/__main__.py", _MAIN)]),
    bytes([_OS_FILE]) + tar([("bastion-os.json", _OS_MANIFEST.to_json()), ("bastion/os/__main__.py", _MAIN)]),
    bytes([_APP]) + tar([("app_manifest.json", _APP_MANIFEST), ("main.py", _MAIN), ("lib/util.py", b"x = 1\n")]),
]
MAX_LEN = 16 * 1024


def test_one_input(data: bytes) -> None:
    """Sign ``data[1:]`` as a payload and unpack it as ``data[0]`` selects."""
    if not data:
        return
    mode, payload = data[0] % 3, data[1:]
    dest = _SCRATCH / "dest"
    try:
        if mode == _APP:
            image = _SCRATCH / "app.img"
            image.write_bytes(package(payload, ImageType.APP, component=APP_COMPONENT))
            unpack_app_payload(image, dest, limits=_APP_LIMITS)
        elif mode == _OS_FILE:
            read_payload_file(
                io.BytesIO(package(payload, ImageType.OS)),
                "bastion/os/__main__.py",
                max_bytes=4096,
                kind=OS_RUNTIME,
                limits=_OS_LIMITS,
            )
        else:
            unpack_os_stream(io.BytesIO(package(payload, ImageType.OS)), dest, limits=_OS_LIMITS)
    except (ImageArchiveError, ImageFormatError):
        pass
    _check_contained()


def _check_contained() -> None:
    # Nothing may appear in the scratch directory but the image file, the destination
    # and (only while an unpack runs) its staging directory; no link anywhere inside.
    for entry in os.scandir(_SCRATCH):
        if entry.name not in ("app.img", "dest"):
            raise RuntimeError(f"unpacking left {entry.name!r} next to its destination")
    for path in _SCRATCH.rglob("*"):
        if path.is_symlink():
            raise RuntimeError("unpacking created a symbolic link")
