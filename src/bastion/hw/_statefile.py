"""Bounded JSON state files with an exclusive lock for read-modify-write."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bastion.hw.atomic import atomic_write_bytes
from bastion.hw.errors import StateCorruptError
from bastion.images.fileio import FileTooLargeError, read_bounded

#: Bound on any JSON state file of the chip (fuses, boot state).
MAX_STATE_FILE_BYTES = 64 * 1024


def read_json(path: Path, *, max_bytes: int = MAX_STATE_FILE_BYTES) -> dict[str, Any]:
    """Read a JSON object from ``path``, bounded.

    Raises:
        StateCorruptError: missing, too large, not JSON, or not an object.
    """
    try:
        data = read_bounded(path, max_bytes)
    except OSError as exc:
        raise StateCorruptError(f"cannot read {path.name}: {exc.strerror}") from exc
    except FileTooLargeError as exc:
        raise StateCorruptError(f"{path.name} is larger than {max_bytes} bytes") from exc
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StateCorruptError(f"{path.name} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise StateCorruptError(f"{path.name} is not a JSON object")
    return value


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write a JSON object atomically (sorted keys, so the file is deterministic)."""
    atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")


@contextlib.contextmanager
def locked_dir(directory: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on a directory itself (needs only read access to it).

    The peripheral files are written by the OS (an unprivileged user) and by
    tools outside (often root); a lock on the directory needs no lock file that
    one of them might not be able to open.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` + ``.lock`` (serializes writers)."""
    lock_path = path.with_name(path.name + ".lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
