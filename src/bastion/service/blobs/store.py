"""A content-addressed blob store on the local filesystem.

Blobs live under ``<root>/sha256/<first two hex>/<hex digest>``; a blob is
written to a temporary file, fsynced and renamed into place, so a reader never
sees a partial blob and a crash leaves no half-written one. Writing the same
content twice is a no-op. An S3 implementation (later) keeps the same interface.

Example:
    >>> store = BlobStore(Path("/tmp/blobs"))                 # doctest: +SKIP
    >>> ref = store.put_stream(io.BytesIO(b"data"), limit=1024)  # doctest: +SKIP
    >>> store.path(ref.sha256).read_bytes()                   # doctest: +SKIP
    b'data'
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["BlobRef", "BlobStore", "BlobTooLargeError", "UnknownBlobError"]

#: Read size while streaming into the store.
CHUNK_BYTES = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BlobTooLargeError(Exception):
    """The stream is longer than the limit; nothing was stored."""


class UnknownBlobError(Exception):
    """No blob with that digest is stored."""


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: its SHA-256 (hex) and size."""

    sha256: str
    size: int


class BlobStore:
    """Content-addressed files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """The path of a stored blob (it may not exist).

        Raises:
            UnknownBlobError: ``sha256`` is not a 64-character lowercase hex digest.
        """
        if not _HEX64.fullmatch(sha256):
            raise UnknownBlobError("a blob id is a 64-character lowercase hex SHA-256")
        return self.root / "sha256" / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored."""
        return self.path(sha256).is_file()

    def put_stream(self, stream: BinaryIO, *, limit: int) -> BlobRef:
        """Store a stream of at most ``limit`` bytes and return its reference.

        Raises:
            BlobTooLargeError: the stream has more than ``limit`` bytes.
        """
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > limit:
                        raise BlobTooLargeError(f"more than {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            ref = BlobRef(digest.hexdigest(), size)
            final = self.path(ref.sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(final)
            return ref
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> BlobRef:
        """Store bytes and return their reference."""
        return self.put_stream(io.BytesIO(data), limit=len(data))

    def open(self, sha256: str) -> BinaryIO:
        """Open a stored blob for reading.

        Raises:
            UnknownBlobError: no such blob.
        """
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError as exc:
            raise UnknownBlobError(f"no blob {sha256}") from exc
