"""Runtime payloads: a deterministic tar of device code, and its safe extraction.

An OS image's payload is a ustar archive of regular files only. Its first member
is the manifest ``bastion-os.json``::

    {"format": 1, "name": "bastion-os", "entry": "bastion.os", "version": "1.0.0",
     "security_version": 1, "fault": null, "files": {"bastion/__init__.py": "<sha256 hex>", ...}}

A bootloader image's payload is the same format (:data:`BOOTLOADER_RUNTIME`):
its manifest is ``bastion-bootloader.json`` (name ``bastion-bootloader``, entry
``bastion.boot``) and it carries the boot stage's and the monitor's code plus
the boot configuration (see :mod:`bastion.boot.config`). Each
:class:`RuntimeKind` names the image type, manifest member, name and entry, so
one reader and one extractor serve both.

Extraction is tar-slip safe and bounded: only regular files, relative paths made
of plain name characters (no absolute paths, no ``..``, no links, devices or
directories as members), bounded member count, member size and total size; the
files must match the manifest exactly; and the payload bytes are re-hashed while
extracting, so they must match the digest in the (already verified) header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bastion.images._archive import PayloadReader, checked_members, extract_member, install_payload, tar_errors
from bastion.images._archive import check_member_name as _check_name
from bastion.images.errors import ImageArchiveError
from bastion.images.package import MAX_SECURITY_VERSION, ImageHeader, ImageLimits, ImageType, inspect_image

__all__ = [
    "BOOTLOADER_RUNTIME",
    "BOOT_CONFIG_FILE",
    "FAULTS",
    "FAULT_FILE",
    "MANIFEST_NAME",
    "OS_RUNTIME",
    "OsArchiveLimits",
    "OsManifest",
    "RuntimeKind",
    "read_fault",
    "read_os_manifest",
    "read_payload_file",
    "runtime_is_intact",
    "unpack_os_payload",
    "unpack_os_stream",
]

MANIFEST_NAME = "bastion-os.json"
#: A file at the root of the runtime that names an injected fault (tests only).
FAULT_FILE = "bastion-fault.txt"
#: Faults a test build may inject: "fail-at-start" makes the OS entry point exit 1.
FAULTS = frozenset({"fail-at-start"})
_DEFAULT_IMAGE_LIMITS = ImageLimits()
_WHAT = "OS archive"
_PYCACHE = "__pycache__"
#: A file's hash in the manifest: what ``hashlib.sha256(...).hexdigest()`` gives, nothing else.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RuntimeKind:
    """Which runtime payload an image carries: its image type, manifest member, name and entry module."""

    image_type: ImageType
    manifest_name: str
    name: str
    entry: str
    what: str


#: The OS image's runtime (``bastion os build``).
OS_RUNTIME = RuntimeKind(ImageType.OS, MANIFEST_NAME, "bastion-os", "bastion.os", _WHAT)
#: The boot configuration's member at the root of a bootloader archive.
BOOT_CONFIG_FILE = "boot-config.json"
#: The bootloader image's runtime: the boot stage, the monitor and the boot configuration.
BOOTLOADER_RUNTIME = RuntimeKind(
    ImageType.BOOTLOADER, "bastion-bootloader.json", "bastion-bootloader", "bastion.boot", "bootloader archive"
)


@dataclass(frozen=True)
class OsArchiveLimits:
    """Bounds applied while extracting an OS payload."""

    max_members: int = 4096
    max_member_bytes: int = 8 * 1024 * 1024
    max_total_bytes: int = 128 * 1024 * 1024
    max_path_length: int = 255
    max_manifest_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class OsManifest:
    """What a runtime archive (OS or bootloader, see :class:`RuntimeKind`) says about itself."""

    version: str
    security_version: int
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 hex
    fault: str | None = None
    entry: str = "bastion.os"
    name: str = "bastion-os"
    format: int = 1

    def to_json(self) -> bytes:
        """Return the deterministic JSON encoding stored in the archive."""
        value = {
            "format": self.format,
            "name": self.name,
            "entry": self.entry,
            "version": self.version,
            "security_version": self.security_version,
            "fault": self.fault,
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, kind: RuntimeKind = OS_RUNTIME) -> OsManifest:
        """Parse a manifest strictly; its name and entry must be those of ``kind``.

        Raises:
            ImageArchiveError: not a version 1 manifest of that kind.
        """
        try:
            value: Any = json.loads(data)
            manifest = cls(
                version=value["version"],
                security_version=value["security_version"],
                files=value["files"],
                fault=value["fault"],
                entry=value["entry"],
                name=value["name"],
                format=value["format"],
            )
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise ImageArchiveError("OS manifest is malformed") from exc
        # Every field has the type the dataclass declares, checked before it is used
        # (an unhashable ``fault`` or a text ``security_version`` once got through:
        # fuzz/harnesses/fuzz_os_manifest.py).
        if type(manifest.format) is not int or manifest.format != 1:
            raise ImageArchiveError("OS manifest is not format 1")
        if not isinstance(manifest.version, str) or not isinstance(manifest.name, str):
            raise ImageArchiveError("OS manifest version and name must be strings")
        if not isinstance(manifest.entry, str) or not (manifest.fault is None or isinstance(manifest.fault, str)):
            raise ImageArchiveError("OS manifest entry and fault must be strings")
        if type(manifest.security_version) is not int or not 0 <= manifest.security_version <= MAX_SECURITY_VERSION:
            raise ImageArchiveError("OS manifest security_version must be an integer in 0..2**32-1")
        # Hashes are exactly lower-case SHA-256 hex: hmac.compare_digest raises TypeError on
        # non-ASCII text (fuzz/regressions/archive/file-hash-not-ascii).
        if not isinstance(manifest.files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _SHA256_HEX.fullmatch(v) for k, v in manifest.files.items()
        ):
            raise ImageArchiveError("OS manifest files must map paths to SHA-256 hex strings")
        if manifest.fault is not None and manifest.fault not in FAULTS:
            raise ImageArchiveError("OS manifest names an unknown fault")
        if (manifest.name, manifest.entry) != (kind.name, kind.entry):
            raise ImageArchiveError(f"the manifest is not that of a {kind.what}")
        return manifest


def check_member_name(name: str, limits: OsArchiveLimits) -> None:
    """Refuse any archive path that could escape the extraction directory.

    Raises:
        ImageArchiveError: absolute, ``..``, empty parts, odd characters, too long.
    """
    _check_name(name, max_path_length=limits.max_path_length, what=_WHAT)


def _open_payload(stream: BinaryIO, image_limits: ImageLimits, kind: RuntimeKind) -> tuple[ImageHeader, PayloadReader]:
    header = inspect_image(stream, limits=image_limits)
    if header.image_type is not kind.image_type:
        raise ImageArchiveError(f"image is a {header.image_type.value} image, not a {kind.image_type.value} image")
    return header, PayloadReader(stream, header.payload_size)


def _read_manifest_member(archive: tarfile.TarFile, kind: RuntimeKind, limits: OsArchiveLimits) -> OsManifest:
    member = archive.next()
    if member is None or member.name != kind.manifest_name or not member.isreg():
        raise ImageArchiveError(f"{kind.what} does not start with its manifest")
    if member.size > limits.max_manifest_bytes:
        raise ImageArchiveError(f"{kind.what} manifest is over its size bound")
    extracted = archive.extractfile(member)
    return OsManifest.from_json(extracted.read() if extracted is not None else b"", kind)


def read_os_manifest(
    stream: BinaryIO, *, image_limits: ImageLimits = _DEFAULT_IMAGE_LIMITS, kind: RuntimeKind = OS_RUNTIME
) -> OsManifest:
    """Read the manifest of a runtime image (``stream`` at the start of the image).

    Raises:
        ImageFormatError: not an image package.
        ImageArchiveError: not an image of ``kind``, or the archive does not start with its manifest.
    """
    limits = OsArchiveLimits()
    _, reader = _open_payload(stream, image_limits, kind)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            return _read_manifest_member(archive, kind, limits)
    except tar_errors() as exc:
        raise ImageArchiveError(f"{kind.what} is not a valid archive") from exc


def read_payload_file(
    stream: BinaryIO,
    name: str,
    *,
    max_bytes: int,
    kind: RuntimeKind,
    limits: OsArchiveLimits = OsArchiveLimits(),
    image_limits: ImageLimits = _DEFAULT_IMAGE_LIMITS,
) -> tuple[OsManifest, bytes]:
    """Return the manifest and one file of a runtime image (``stream`` at its start), without unpacking.

    Every member passes the same checks as at extraction; the file must be
    listed in the manifest, with its hash.

    Raises:
        ImageFormatError: not an image package.
        ImageArchiveError: not an image of ``kind``, unsafe or malformed archive,
            or the file is missing, over ``max_bytes`` or does not match the manifest.
    """
    _, reader = _open_payload(stream, image_limits, kind)
    manifest: OsManifest | None = None
    data: bytes | None = None
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            members = checked_members(
                archive, limits, what=kind.what, first=kind.manifest_name, first_max_bytes=limits.max_manifest_bytes
            )
            for count, member in members:
                if count == 1 or member.name == name:
                    if count > 1 and (data is not None or member.size > max_bytes):
                        raise ImageArchiveError(f"{kind.what} holds {name!r} twice or over its bound")
                    extracted = archive.extractfile(member)
                    content = extracted.read() if extracted is not None else b""
                    if count == 1:
                        manifest = OsManifest.from_json(content, kind)
                    else:
                        data = content
    except tar_errors() as exc:
        raise ImageArchiveError(f"{kind.what} is not a valid archive") from exc
    if manifest is None or data is None:
        raise ImageArchiveError(f"{kind.what} holds no {name!r}")
    listed = manifest.files.get(name, "")
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), listed):
        raise ImageArchiveError(f"{name!r} does not match the {kind.what} manifest")
    return manifest, data


def _extract_all(reader: PayloadReader, dest: Path, limits: OsArchiveLimits, kind: RuntimeKind) -> OsManifest:
    hashes: dict[str, str] = {}
    manifest: OsManifest | None = None
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        members = checked_members(
            archive, limits, what=kind.what, first=kind.manifest_name, first_max_bytes=limits.max_manifest_bytes
        )
        for count, member in members:
            hashes[member.name] = extract_member(archive, member, dest / member.name, what=kind.what)
            if count == 1:
                manifest = OsManifest.from_json((dest / kind.manifest_name).read_bytes(), kind)
    if manifest is None:
        raise ImageArchiveError(f"{kind.what} is empty")
    hashes.pop(kind.manifest_name)
    if hashes != manifest.files:
        raise ImageArchiveError(f"{kind.what} content does not match its manifest")
    return manifest


def unpack_os_stream(
    stream: BinaryIO,
    dest_dir: Path,
    *,
    limits: OsArchiveLimits = OsArchiveLimits(),
    image_limits: ImageLimits = _DEFAULT_IMAGE_LIMITS,
    kind: RuntimeKind = OS_RUNTIME,
) -> OsManifest:
    """Extract the payload of a runtime image (``stream`` at its start) to ``dest_dir``.

    The caller has verified the image (:func:`verify_image`). The payload is
    re-hashed during extraction; if it no longer matches the header (the file
    changed), nothing is installed. ``dest_dir`` is replaced atomically.

    Raises:
        ImageFormatError: not an image package.
        ImageArchiveError: unsafe or malformed archive, or the payload changed.
    """
    header, _ = _open_payload(stream, image_limits, kind)
    return install_payload(
        stream,
        header.payload_size,
        header.payload_digest,
        dest_dir,
        lambda reader, staging: _extract_all(reader, staging, limits, kind),
        what=f"{kind.what} payload",
    )


def unpack_os_payload(
    verified_image_path: Path, dest_dir: Path, *, limits: OsArchiveLimits = OsArchiveLimits()
) -> OsManifest:
    """Extract the payload of a verified OS image file to ``dest_dir`` (see :func:`unpack_os_stream`)."""
    with verified_image_path.open("rb") as stream:
        return unpack_os_stream(stream, dest_dir, limits=limits)


def runtime_is_intact(
    runtime_dir: Path, manifest: OsManifest, *, kind: RuntimeKind = OS_RUNTIME, allow_pycache: bool = True
) -> bool:
    """Return whether ``runtime_dir`` holds exactly the manifest's files, unmodified.

    With ``allow_pycache``, ``__pycache__`` directories, which Python creates
    when it runs the code, are ignored. Without it (the bootloader's tree, run
    with bytecode writing off) a ``__pycache__`` means not intact: a planted
    ``.pyc`` would otherwise run instead of the measured source. Anything else
    extra, missing, changed or a symlink means not intact.
    """
    if not runtime_dir.is_dir() or runtime_dir.is_symlink():
        return False
    expected = {**manifest.files, kind.manifest_name: hashlib.sha256(manifest.to_json()).hexdigest()}
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(runtime_dir):
        if not allow_pycache and _PYCACHE in dirs:
            return False
        dirs[:] = [d for d in dirs if d != _PYCACHE]
        for name in files:
            path = Path(root) / name
            if path.is_symlink():
                return False
            found[path.relative_to(runtime_dir).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        if any((Path(root) / d).is_symlink() for d in dirs):
            return False
    return found.keys() == expected.keys() and all(hmac.compare_digest(found[k], expected[k]) for k in expected)


def read_fault(runtime_dir: Path) -> str | None:
    """Return the fault injected into an OS runtime by a test build, or None.

    The OS entry point calls this at start; for ``"fail-at-start"`` it exits 1.
    """
    path = runtime_dir / FAULT_FILE
    if not path.is_file():
        return None
    value = path.read_text(encoding="ascii", errors="replace")[:64].strip()
    return value if value in FAULTS else None
