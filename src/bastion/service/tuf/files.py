"""File operations of the repository writer: the group lock, bounded reads, target placement.

Every write is atomic (temp file, fsync, rename, fsync of the directory), so a
reader (the static file server, a CDN origin pull, an rsync) never sees a
partial file and a crash never leaves one.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bastion.service.blobs.store import BlobStore, UnknownBlobError
from bastion.service.tuf.errors import CorruptRepository, InvalidTarget

__all__ = [
    "LOCK_FILE",
    "PUBLISH_LOCK_FILE",
    "check_blob",
    "fsync_dir",
    "group_lock",
    "place_target",
    "read_bounded",
]

LOCK_FILE = "lock"
#: Held by the fleet around "read the committed state, then publish it" (a second, outer lock:
#: a publish from an older read can never land after one from a newer read).
PUBLISH_LOCK_FILE = "publish.lock"


def fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def group_lock(directory: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory/<name>`` (serialises threads and processes).

    Each call opens its own file description, so two threads of one process
    exclude each other as two processes do.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def read_bounded(path: Path, limit: int) -> bytes:
    """Read a repository file of at most ``limit`` bytes.

    Raises:
        FileNotFoundError: no such file.
        CorruptRepository: the file is larger than ``limit`` or unreadable.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptRepository(f"cannot read {path.name}") from exc
    if len(data) > limit:
        raise CorruptRepository(f"{path.name} is larger than {limit} bytes")
    return data


def check_blob(store: BlobStore, sha256: str, length: int) -> Path:
    """The path of blob ``sha256``, checked to exist with ``length`` bytes.

    Raises:
        InvalidTarget: the blob is not in the store, or its size is not ``length``.
    """
    try:
        src = store.path(sha256)
        size = src.stat().st_size
    except (UnknownBlobError, FileNotFoundError) as exc:
        raise InvalidTarget(f"blob {sha256} is not in the blob store") from exc
    if size != length:
        raise InvalidTarget(f"blob {sha256} has {size} bytes, not the {length} its target declares")
    return src


def place_target(store: BlobStore, dest: Path, sha256: str, length: int) -> None:
    """Make the blob ``sha256`` available at ``dest`` (a hard link, else a copy).

    A file already at ``dest`` is kept: its name carries its content hash.

    Raises:
        InvalidTarget: as :func:`check_blob`.
    """
    src = check_blob(store, sha256, length)
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.tmp")
    try:
        try:
            os.link(src, tmp)  # blobs are immutable (replaced only by rename), so sharing the inode is safe
        except OSError:
            with src.open("rb") as fin, tmp.open("xb") as fout:
                shutil.copyfileobj(fin, fout)
                fout.flush()
                os.fsync(fout.fileno())
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)
