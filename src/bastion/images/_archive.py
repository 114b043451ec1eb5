"""Private helpers shared by the OS and app payloads: deterministic tar writing,
tar-slip-safe extraction of regular files, payload re-hashing, atomic output.

Not part of the public API; :mod:`bastion.images.os_payload`,
:mod:`bastion.images.os_build`, :mod:`bastion.images.app_build` and
:mod:`bastion.images.delta` use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import re
import secrets
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from bastion.images.errors import ImageArchiveError
from bastion.images.fileio import atomic_writer, remove_tree

__all__ = [
    "COPY_CHUNK_BYTES",
    "FIXED_MTIME",
    "ArchiveBounds",
    "PayloadReader",
    "add_regular_file",
    "atomic_output",
    "check_member_name",
    "checked_members",
    "extract_member",
    "install_payload",
    "remove_tree",
    "tar_errors",
]

#: Fixed metadata of every archive entry (1980-01-01, as reproducible zips use).
FIXED_MTIME = 315532800
#: Copy buffer for streamed extraction and writes.
COPY_CHUNK_BYTES = 64 * 1024
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def add_regular_file(archive: tarfile.TarFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    """Append a regular file with fixed mtime, owner and the given mode."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = FIXED_MTIME
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def check_member_name(name: str, *, max_path_length: int, what: str) -> None:
    """Refuse any archive path that could escape the extraction directory.

    A part must start with a letter, digit or underscore, so ``.`` and ``..``
    cannot appear.

    Raises:
        ImageArchiveError: absolute, ``..``, empty parts, odd characters, too long.
    """
    if not name or len(name) > max_path_length or name.startswith("/") or "\\" in name:
        raise ImageArchiveError(f"unsafe path in {what}: {name[:80]!r}")
    for part in name.split("/"):
        if not _PART.match(part):
            raise ImageArchiveError(f"unsafe path in {what}: {name[:80]!r}")


class PayloadReader(io.RawIOBase):
    """Hands out exactly ``size`` bytes of the payload and hashes them."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self.remaining = size
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.remaining)
        if want == 0:
            return 0
        data = self._stream.read(want)
        view[: len(data)] = data
        self.digest.update(data)
        self.remaining -= len(data)
        return len(data)

    def drain(self) -> None:
        """Read (and hash) the rest of the payload."""
        while self.read(COPY_CHUNK_BYTES):
            pass


def extract_member(
    archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path, *, what: str, mode: int = 0o644
) -> str:
    """Write one regular member to ``target`` (never following or replacing anything); return its SHA-256 hex.

    Raises:
        ImageArchiveError: unreadable member, or a path that already exists (a duplicate).
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a file member already sits where a directory goes
        raise ImageArchiveError(f"duplicate path in {what}: {member.name!r}") from exc
    source = archive.extractfile(member)
    if source is None:
        raise ImageArchiveError(f"cannot read {member.name!r} from the {what}")
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(target, flags, mode)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise ImageArchiveError(f"duplicate path in {what}: {member.name!r}") from exc
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


class ArchiveBounds(Protocol):
    """The bounds both payload kinds share (see ``OsArchiveLimits`` and ``AppArchiveLimits``)."""

    @property
    def max_members(self) -> int: ...
    @property
    def max_member_bytes(self) -> int: ...
    @property
    def max_total_bytes(self) -> int: ...
    @property
    def max_path_length(self) -> int: ...


def checked_members(
    archive: tarfile.TarFile, bounds: ArchiveBounds, *, what: str, first: str, first_max_bytes: int
) -> Iterator[tuple[int, tarfile.TarInfo]]:
    """Yield ``(index from 1, member)`` once each passes the count, type, name and size checks.

    Raises:
        ImageArchiveError: too many members, a member that is not a regular file,
            an unsafe name, over the size bounds, or a first member other than ``first``.
    """
    total = 0
    for count, member in enumerate(archive, start=1):
        if count > bounds.max_members:
            raise ImageArchiveError(f"{what} has more than {bounds.max_members} members")
        if not member.isreg():
            raise ImageArchiveError(f"{what} member {member.name[:80]!r} is not a regular file")
        check_member_name(member.name, max_path_length=bounds.max_path_length, what=what)
        total += member.size
        if member.size > bounds.max_member_bytes or total > bounds.max_total_bytes:
            raise ImageArchiveError(f"{what} is over its size bounds")
        if count == 1 and (member.name != first or member.size > first_max_bytes):
            raise ImageArchiveError(f"{what} does not start with its manifest")
        yield count, member


_T = TypeVar("_T")


def install_payload(
    stream: BinaryIO,
    payload_size: int,
    payload_digest: bytes,
    dest: Path,
    extract: Callable[[PayloadReader, Path], _T],
    *,
    what: str,
) -> _T:
    """Extract a payload (``stream`` at its first byte) into a staging directory, then replace ``dest`` with it.

    The payload is re-hashed while it is read; if it no longer matches the
    verified header, or ``extract`` raises, nothing is installed and the
    staging directory is removed.

    Raises:
        ImageArchiveError: malformed archive, or the payload changed since it was verified.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir(mode=0o755)
    reader = PayloadReader(stream, payload_size)
    try:
        try:
            result = extract(reader, staging)
            reader.drain()
        except tar_errors() as exc:
            raise ImageArchiveError(f"{what} is not a valid archive") from exc
        if reader.remaining or not hmac.compare_digest(reader.digest.digest(), payload_digest):
            raise ImageArchiveError(f"{what} changed since it was verified")
        remove_tree(dest)
        staging.rename(dest)
    except BaseException:
        remove_tree(staging)
        raise
    return result


def tar_errors() -> tuple[type[BaseException], ...]:
    """The exceptions :mod:`tarfile` raises on malformed input."""
    return (tarfile.TarError, ValueError, EOFError, UnicodeError)


def atomic_output(path: Path, *, mode: int = 0o644) -> contextlib.AbstractContextManager[BinaryIO]:
    """A file that replaces ``path`` atomically (temp file, fsync, rename) if the block succeeds.

    On any error the temp file is removed and ``path`` is left as it was, so a
    reader never sees a partial file. Parent directories are created.
    """
    return atomic_writer(path, mode=mode, make_parents=True)
