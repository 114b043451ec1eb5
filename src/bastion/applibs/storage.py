"""MutableStorage: the app's persistent files (manifest ``"MutableStorage": {"SizeKB": N}``).

Azure Sphere gives an app one mutable file; Bastion gives it named files under
one quota. The files keep what the app wrote across reboots and app updates.
Inside the sandbox they can be read directly under ``/storage`` (read-only);
every change goes through the OS, which counts every file (rounded up to 4 KiB
blocks, plus a per-file overhead) against ``SizeKB``.

Names are 1..64 characters of ``A-Z a-z 0-9 . _ -`` with no leading dot and no
``..``. One call carries at most :data:`MAX_CHUNK_BYTES`; :func:`write_file`
and :func:`read_file` split larger data for you (a large write is then no
longer one atomic step: the first chunk replaces the file, the rest append).

Example::

    from bastion.applibs import storage
    storage.write_file("state.json", b'{"count": 1}')
    data = storage.read_file("state.json")
    print(storage.get_usage().used_bytes)

Raises (every function): :class:`~bastion.applibs.errors.PermissionDeniedError`
without the capability, :class:`~bastion.applibs.errors.QuotaExceededError` past
``SizeKB`` (nothing is written), :class:`~bastion.applibs.errors.NotFoundError`
for a missing file, :class:`~bastion.applibs.errors.InvalidArgumentError` for a
bad name.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from bastion.applibs._client import connection

__all__ = [
    "MAX_CHUNK_BYTES",
    "FileInfo",
    "StorageUsage",
    "append_file",
    "delete_file",
    "get_usage",
    "list_files",
    "read_file",
    "write_file",
]

#: Most data one request carries (the OS's bound; the wire message stays under 128 KiB).
MAX_CHUNK_BYTES = 64 * 1024
#: Bound on what :func:`read_file` reads when no length is given.
MAX_READ_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class FileInfo:
    """One stored file."""

    name: str
    size: int


@dataclass(frozen=True)
class StorageUsage:
    """What the app's files count against its quota."""

    used_bytes: int
    quota_bytes: int
    files: int
    max_files: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_file(name: str, data: bytes) -> int:
    """Replace ``name`` with ``data`` (atomic when ``data`` fits one chunk); returns the size."""
    first, rest = bytes(data[:MAX_CHUNK_BYTES]), data[MAX_CHUNK_BYTES:]
    size = int(connection().call("storage.write", {"name": name, "data_b64": _b64(first)})["size"])
    for start in range(0, len(rest), MAX_CHUNK_BYTES):
        size = append_file(name, bytes(rest[start : start + MAX_CHUNK_BYTES]))
    return size


def append_file(name: str, data: bytes) -> int:
    """Add ``data`` (at most :data:`MAX_CHUNK_BYTES`) at the end of ``name``; returns the new size."""
    return int(connection().call("storage.append", {"name": name, "data_b64": _b64(data)})["size"])


def read_file(name: str, offset: int = 0, length: int | None = None) -> bytes:
    """``length`` bytes of ``name`` from ``offset`` (to the end when ``None``, bounded by :data:`MAX_READ_BYTES`)."""
    want = MAX_READ_BYTES if length is None else length
    parts: list[bytes] = []
    got = 0
    while got < want:
        reply = connection().call(
            "storage.read", {"name": name, "offset": offset + got, "length": min(MAX_CHUNK_BYTES, want - got)}
        )
        chunk = base64.b64decode(str(reply["data_b64"]))
        parts.append(chunk)
        got += len(chunk)
        if not chunk or reply.get("eof"):
            break
    return b"".join(parts)


def delete_file(name: str) -> None:
    """Remove ``name``."""
    connection().call("storage.delete", {"name": name})


def list_files() -> list[FileInfo]:
    """The app's files, by name."""
    files = connection().call("storage.list")["files"]
    return [FileInfo(str(f["name"]), int(f["size"])) for f in files]


def get_usage() -> StorageUsage:
    """Bytes used against the quota, the quota, and the file count and its bound."""
    reply = connection().call("storage.usage")
    return StorageUsage(
        int(reply["used_bytes"]), int(reply["quota_bytes"]), int(reply["files"]), int(reply["max_files"])
    )
