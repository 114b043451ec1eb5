"""Build OS images: the real device runtime, packaged deterministically and signed.

:func:`build_runtime_payload` is the one archive builder; the bootloader image
(:mod:`bastion.boot.bootloader_image`) uses it too, for the boot stage and monitor code.

The payload is a ustar archive (see :mod:`bastion.images.os_payload`) of the
``.py`` sources of the packages the OS process needs (:data:`OS_PACKAGES`),
located through the installed ``bastion`` package. Entries are sorted, with fixed
mtime, owner and mode, so the same sources and version give a byte-identical
payload.

Example::

    build_os_image(Path("os.img"), "1.0.0", 1, load_private_key_pem(pem))
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bastion
from bastion.crypto.keys import PrivateKey
from bastion.images._archive import add_regular_file, atomic_output, check_member_name
from bastion.images.errors import ImageArchiveError, ImageBuildError
from bastion.images.os_payload import FAULT_FILE, FAULTS, OS_RUNTIME, OsArchiveLimits, OsManifest, RuntimeKind
from bastion.images.package import ImageHeader, ImageType, build_image, measure_image

__all__ = [
    "OS_COMPONENT_ID",
    "OS_PACKAGES",
    "OsBuildResult",
    "build_os_image",
    "build_os_payload",
    "build_runtime_payload",
]

#: The component ID of the Bastion OS (fixed: a UUIDv5 of its URN).
OS_COMPONENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:bastion:component:os"))
#: Subpackages of ``bastion`` that the OS process runs (plus ``bastion/__init__.py``).
OS_PACKAGES = ("os", "monitor", "images", "crypto", "hw", "applibs", "jsonlog")
_FILE_MODE = 0o644


@dataclass(frozen=True)
class OsBuildResult:
    """What :func:`build_os_image` produced."""

    path: Path
    header: ImageHeader
    measurement: bytes
    file_count: int


def _source_files(source_root: Path, packages: tuple[str, ...]) -> list[tuple[str, Path]]:
    init = source_root / "__init__.py"
    if not init.is_file():
        raise ImageBuildError(f"no bastion package at {source_root}")
    files = [("bastion/__init__.py", init)]
    for package in packages:
        base = source_root / package
        if not (base / "__init__.py").is_file():
            raise ImageBuildError(f"package bastion.{package} is missing from {source_root}")
        for root, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in names:
                path = Path(root) / name
                if name.endswith(".py") and path.is_file() and not path.is_symlink():
                    files.append((f"bastion/{path.relative_to(source_root).as_posix()}", path))
    return sorted(files)


def build_os_payload(
    version: str, security_version: int, *, fault: str | None = None, source_root: Path | None = None
) -> tuple[bytes, OsManifest]:
    """Return the deterministic OS archive and its manifest.

    Args:
        version: the OS version (semantic version).
        security_version: the anti-rollback security version.
        fault: a test-only fault to inject (one of :data:`FAULTS`), or None.
        source_root: the ``bastion`` package directory (default: the installed one).

    Raises:
        ImageBuildError: unknown fault, or sources missing.
    """
    if fault is not None and fault not in FAULTS:
        raise ImageBuildError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
    extra = {FAULT_FILE: fault.encode() + b"\n"} if fault is not None else {}
    return build_runtime_payload(
        OS_RUNTIME, version, security_version, OS_PACKAGES, extra_files=extra, fault=fault, source_root=source_root
    )


def build_runtime_payload(
    kind: RuntimeKind,
    version: str,
    security_version: int,
    packages: tuple[str, ...],
    *,
    extra_files: dict[str, bytes] | None = None,
    fault: str | None = None,
    source_root: Path | None = None,
) -> tuple[bytes, OsManifest]:
    """Return a deterministic runtime archive of ``kind`` and its manifest.

    The archive holds the manifest, then, sorted by name, ``bastion/__init__.py``,
    the ``.py`` sources of ``packages`` (subpackages of ``bastion``) and
    ``extra_files`` (data at the archive root, such as the boot configuration).

    Raises:
        ImageBuildError: sources missing, or an extra file name that is unsafe or
            collides with a source file.
    """
    root = source_root if source_root is not None else Path(bastion.__file__).parent
    contents = {name: path.read_bytes() for name, path in _source_files(root, packages)}
    for name, data in (extra_files or {}).items():
        try:
            check_member_name(name, max_path_length=OsArchiveLimits().max_path_length, what=kind.what)
        except ImageArchiveError as exc:
            raise ImageBuildError(str(exc)) from exc
        if name in contents or name == kind.manifest_name:
            raise ImageBuildError(f"{name!r} would replace a file of the {kind.what}")
        contents[name] = data
    manifest = OsManifest(
        version=version,
        security_version=security_version,
        files={name: hashlib.sha256(data).hexdigest() for name, data in contents.items()},
        fault=fault,
        entry=kind.entry,
        name=kind.name,
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        add_regular_file(archive, kind.manifest_name, manifest.to_json(), mode=_FILE_MODE)
        for name in sorted(contents):
            add_regular_file(archive, name, contents[name], mode=_FILE_MODE)
    return buffer.getvalue(), manifest


def build_os_image(
    out: Path,
    version: str,
    security_version: int,
    key: PrivateKey,
    *,
    fault: str | None = None,
    source_root: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> OsBuildResult:
    """Build and sign an OS image of the device runtime, written atomically to ``out``.

    Raises:
        ImageBuildError: bad version or security version, unknown fault, sources missing.
    """
    report = progress or (lambda _message: None)
    report("collecting the device runtime sources")
    payload, manifest = build_os_payload(version, security_version, fault=fault, source_root=source_root)
    report(f"packaging {len(manifest.files)} files ({len(payload)} bytes), signing")
    with atomic_output(out, mode=0o644) as handle:
        header = build_image(
            handle,
            io.BytesIO(payload),
            image_type=ImageType.OS,
            component_id=OS_COMPONENT_ID,
            version=version,
            security_version=security_version,
            key=key,
        )
    return OsBuildResult(out, header, measure_image(out), len(manifest.files))
