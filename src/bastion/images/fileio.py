"""Atomic, durable file writes: temp file, fsync, rename, fsync dir.

The one implementation behind device state files (``bastion.hw.atomic``), image
and patch outputs, and unpacked payloads. It lives in ``images``, the lowest
layer that does file I/O, so every layer above can use it.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_bytes(d / "state.json", b"{}", mode=0o600)
    >>> (d / "state.json").read_bytes()
    b'{}'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "FileTooLargeError",
    "atomic_write_bytes",
    "atomic_writer",
    "copy_stream",
    "fsync_dir",
    "read_bounded",
    "remove_tree",
]

#: Copy buffer used by streamed writes.
COPY_CHUNK_BYTES = 1024 * 1024


class FileTooLargeError(Exception):
    """A file is larger than the bound its reader allows."""


def read_bounded(path: Path, limit: int) -> bytes:
    """Read a whole file of at most ``limit`` bytes (at most ``limit + 1`` are ever read).

    Raises:
        OSError: the file cannot be read.
        FileTooLargeError: it holds more than ``limit`` bytes.
    """
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(f"{path.name} is larger than {limit} bytes")
    return data


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename) to stable storage."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o644, make_parents: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically when the block succeeds.

    The temp file is created with ``mode`` from the start (0600 for secrets), so a
    secret is never readable by others, even briefly. On error the temp file is
    removed and ``path`` is unchanged.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably, created with ``mode``."""
    with atomic_writer(path, mode=mode) as handle:
        handle.write(data)


def copy_stream(src: BinaryIO, dst: BinaryIO, *, limit: int) -> int:
    """Copy at most ``limit`` bytes; return the count, or -1 if ``src`` had more."""
    copied = 0
    while True:
        chunk = src.read(min(COPY_CHUNK_BYTES, limit + 1 - copied))
        if not chunk:
            return copied
        copied += len(chunk)
        if copied > limit:
            return -1
        dst.write(chunk)


def remove_tree(path: Path) -> None:
    """Remove a directory tree if it exists (symlinks are removed, not followed)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
