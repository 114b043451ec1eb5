"""App image packages: build a signed image of an app directory, and unpack a verified one.

The payload is a deterministic ustar archive of the app's regular files. Its
first member is ``app_manifest.json`` in canonical form (sorted keys, with
``Version`` set to the image's version), then every other file in sorted
order, with fixed mtime and owner; a file keeps only whether it is executable
(mode 0755 or 0644). ``__pycache__`` and names starting with ``.`` are left
out; a symlink, or any file that is not regular, is refused.

The image header's ``component_id`` is the manifest's ``ComponentId``; its
``version`` comes from ``version=`` (``--version``) or the manifest's ``Version``.

Unpacking is tar-slip safe and bounded (regular files only, plain relative
names, bounded counts and sizes), re-hashes the payload against the verified
header, checks the manifest against the header, and replaces ``dest``
atomically.

Example::

    result = build_app_image(Path("examples/apps/hello"), Path("hello.img"), key, version="1.0.0")
    with result.path.open("rb") as f:
        verify_image(f, [key.public_key()])
    manifest = unpack_app_payload(result.path, Path("DEV/apps/<id>/1.0.0"))
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.crypto.keys import PrivateKey
from bastion.images._archive import (
    PayloadReader,
    add_regular_file,
    atomic_output,
    check_member_name,
    checked_members,
    extract_member,
    install_payload,
)
from bastion.images.errors import ImageArchiveError, ImageBuildError
from bastion.images.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    AppManifest,
    ManifestError,
    ManifestIssue,
    validate_manifest,
)
from bastion.images.package import ImageHeader, ImageLimits, ImageType, build_image, inspect_image, measure_image

__all__ = [
    "AppArchiveLimits",
    "AppBuildResult",
    "build_app_image",
    "build_app_payload",
    "load_app_manifest",
    "unpack_app_payload",
]

_WHAT = "app archive"
_EXEC_MODE = 0o755
_FILE_MODE = 0o644
_DEFAULT_IMAGE_LIMITS = ImageLimits()


@dataclass(frozen=True)
class AppArchiveLimits:
    """Bounds applied while building or extracting an app payload."""

    max_members: int = 4096
    max_member_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 128 * 1024 * 1024
    max_path_length: int = 255


@dataclass(frozen=True)
class AppBuildResult:
    """What :func:`build_app_image` produced."""

    path: Path
    header: ImageHeader
    manifest: AppManifest
    measurement: bytes
    file_count: int


def load_app_manifest(app_dir: Path) -> AppManifest:
    """Read and validate ``app_dir/app_manifest.json``, and check that its entry point exists.

    Raises:
        ImageBuildError: the manifest file is missing or unreadable.
        ManifestError: the manifest is invalid (every problem, with its JSON path),
            or the entry point is not a regular file of the app.
    """
    path = app_dir / MANIFEST_NAME
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ImageBuildError(f"cannot read {path}: {exc.strerror}") from exc
    manifest = validate_manifest(data)
    entry = app_dir / manifest.entry_point
    if entry.is_symlink() or not entry.is_file():
        raise ManifestError([ManifestIssue("$.EntryPoint", f"{manifest.entry_point!r} is not a file of the app")])
    return manifest


def _app_files(app_dir: Path, limits: AppArchiveLimits) -> list[tuple[str, Path, int]]:
    """Return ``(archive name, path, mode)`` of every file to package, sorted."""
    files: list[tuple[str, Path, int]] = []
    for root, dirs, names in os.walk(app_dir):
        base = Path(root)
        for name in dirs:
            if (base / name).is_symlink():
                raise ImageBuildError(f"{base / name} is a symlink; apps contain regular files only")
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in names:
            path = base / name
            relative = path.relative_to(app_dir).as_posix()
            if name.startswith(".") or relative == MANIFEST_NAME:
                continue
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                raise ImageBuildError(f"{path} is not a regular file; apps contain regular files only")
            try:
                check_member_name(relative, max_path_length=limits.max_path_length, what=_WHAT)
            except ImageArchiveError as exc:
                raise ImageBuildError(f"cannot package {relative!r}: use plain file names") from exc
            files.append((relative, path, _EXEC_MODE if info.st_mode & stat.S_IXUSR else _FILE_MODE))
    if len(files) + 1 > limits.max_members:
        raise ImageBuildError(f"app has more than {limits.max_members} files")
    return sorted(files)


def build_app_payload(
    app_dir: Path, *, version: str | None = None, limits: AppArchiveLimits = AppArchiveLimits()
) -> tuple[bytes, AppManifest, str, int]:
    """Return the deterministic app archive, its manifest, the image version and the file count.

    Raises:
        ImageBuildError: no version, unreadable or unsafe files, over the bounds.
        ManifestError: the manifest is invalid.
    """
    manifest = load_app_manifest(app_dir)
    image_version = version if version is not None else manifest.version
    if image_version is None:
        raise ImageBuildError("the app has no version: pass --version or set Version in app_manifest.json")
    files = _app_files(app_dir, limits)
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        add_regular_file(archive, MANIFEST_NAME, manifest.to_json(version=image_version))
        for name, path, mode in files:
            data = path.read_bytes()
            total += len(data)
            if len(data) > limits.max_member_bytes or total > limits.max_total_bytes:
                raise ImageBuildError(f"app is over its size bounds at {name!r}")
            add_regular_file(archive, name, data, mode=mode)
    return buffer.getvalue(), manifest, image_version, len(files) + 1


def build_app_image(
    app_dir: Path,
    out: Path,
    key: PrivateKey,
    *,
    version: str | None = None,
    security_version: int = 1,
    limits: AppArchiveLimits = AppArchiveLimits(),
    progress: Callable[[str], None] | None = None,
) -> AppBuildResult:
    """Validate, package and sign an app directory as an app image, written atomically to ``out``.

    Args:
        app_dir: the app: ``app_manifest.json`` at its root, plus its files.
        out: the image file to write.
        key: the tenant's app-signing key.
        version: the image version; default the manifest's ``Version``.
        security_version: the image's security version.
        limits: bounds on the app's files.
        progress: called with a line per step.

    Raises:
        ManifestError: the manifest is invalid (every problem, with its JSON path).
        ImageBuildError: no version, bad version, unsafe files, over the bounds.
    """
    report = progress or (lambda _message: None)
    report(f"validating {app_dir / MANIFEST_NAME}")
    payload, manifest, image_version, count = build_app_payload(app_dir, version=version, limits=limits)
    report(f"packaging {count} files ({len(payload)} bytes), signing")
    with atomic_output(out, mode=0o644) as handle:
        header = build_image(
            handle,
            io.BytesIO(payload),
            image_type=ImageType.APP,
            component_id=manifest.component_id,
            version=image_version,
            security_version=security_version,
            key=key,
        )
    # The manifest as it is inside the image (with the image's version).
    packaged = validate_manifest(manifest.to_json(version=image_version))
    return AppBuildResult(out, header, packaged, measure_image(out), count)


def _extract_all(reader: PayloadReader, dest: Path, header: ImageHeader, limits: AppArchiveLimits) -> AppManifest:
    manifest: AppManifest | None = None
    names: set[str] = set()
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        members = checked_members(archive, limits, what=_WHAT, first=MANIFEST_NAME, first_max_bytes=MAX_MANIFEST_BYTES)
        for count, member in members:
            mode = _EXEC_MODE if member.mode & stat.S_IXUSR else _FILE_MODE
            extract_member(archive, member, dest / member.name, what=_WHAT, mode=mode)
            names.add(member.name)
            if count == 1:
                manifest = _check_manifest((dest / MANIFEST_NAME).read_bytes(), header)
    if manifest is None:
        raise ImageArchiveError("app archive is empty")
    if manifest.entry_point not in names:
        raise ImageArchiveError(f"app entry point {manifest.entry_point!r} is not in the archive")
    return manifest


def _check_manifest(data: bytes, header: ImageHeader) -> AppManifest:
    try:
        manifest = validate_manifest(data)
    except ManifestError as exc:
        raise ImageArchiveError(f"app manifest in the image is invalid: {exc}") from exc
    if manifest.component_id != header.component_id or manifest.version != header.version:
        raise ImageArchiveError("app manifest does not match the image header (component id or version)")
    return manifest


def unpack_app_payload(
    verified_image: Path,
    dest: Path,
    *,
    limits: AppArchiveLimits = AppArchiveLimits(),
    image_limits: ImageLimits = _DEFAULT_IMAGE_LIMITS,
) -> AppManifest:
    """Extract the payload of a verified app image to ``dest`` (replaced atomically).

    The caller has verified the image (:func:`~bastion.images.package.verify_image`)
    against the pinned app-signing keys. The payload is re-hashed while it is
    extracted; if it no longer matches the header, nothing is installed.

    Raises:
        ImageFormatError: not an image package.
        ImageArchiveError: not an app image; an unsafe, malformed or oversized
            archive; a manifest that is invalid, does not come first or does not
            match the header; an entry point that is not in the archive; or a
            payload that changed since it was verified.
    """
    with verified_image.open("rb") as stream:
        header = inspect_image(stream, limits=image_limits)
        if header.image_type is not ImageType.APP:
            raise ImageArchiveError(f"image is a {header.image_type.value} image, not an app image")
        return install_payload(
            stream,
            header.payload_size,
            header.payload_digest,
            dest,
            lambda reader, staging: _extract_all(reader, staging, header, limits),
            what="app payload",
        )
