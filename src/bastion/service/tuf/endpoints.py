"""Static serving of the groups' TUF repositories: ``/tuf/{group_id}/metadata|targets/...``.

No auth: the files are signed, public and cacheable, so a CDN or an object
store can serve them instead (docs/updates.md, "TUF repositories"). This is the
devices' check-in path, so it is a raw ASGI app mounted outside FastAPI's
dependency machinery (:class:`TufStaticMiddleware`, ahead of routing): a
no-change check-in (a 404 probe for the next root and a conditional
``timestamp.json``) costs one ``stat`` and a dictionary lookup.

* Only names the repository can hold are served (:mod:`~bastion.service.tuf.layout`
  patterns): no traversal, no dot files, no keys, no lock file.
* Strong ``ETag``: metadata files carry the SHA-256 of their bytes (computed once
  per file version and cached with the bytes of small files); a target's name
  carries the SHA-256 of its content, which is its ETag.
* ``Cache-Control``: ``timestamp.json`` ``max-age=60``; versioned metadata and
  hash-prefixed targets ``public, max-age=31536000, immutable``; 404 ``max-age=60``
  (the next root appears within a minute of a rotation).
* ``304 Not Modified`` on a matching ``If-None-Match``; targets stream with
  ``Range`` support (resumable downloads).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from starlette.responses import FileResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.service.config import Settings
from bastion.service.tuf.errors import TufError
from bastion.service.tuf.layout import is_metadata_name, is_served_target_path, tuf_root, validate_group_id
from bastion.service.tuf.repository import MAX_METADATA_BYTES, TIMESTAMP_FILE

__all__ = [
    "CACHE_MAX_BYTES",
    "CACHE_MAX_ENTRIES",
    "CACHE_MAX_FILE_BYTES",
    "IMMUTABLE_CACHE_CONTROL",
    "MAX_IF_NONE_MATCH_CHARS",
    "MUTABLE_CACHE_CONTROL",
    "NOT_FOUND_CACHE_CONTROL",
    "TUF_PREFIX",
    "TufStaticApp",
    "TufStaticMiddleware",
]

#: Where the app is mounted.
TUF_PREFIX = "/tuf"
#: Cache-Control of ``timestamp.json``: the TUF freshness file, replaced in place.
MUTABLE_CACHE_CONTROL = b"public, max-age=60"
#: Cache-Control of versioned metadata and hash-prefixed targets: never change once written.
IMMUTABLE_CACHE_CONTROL = b"public, max-age=31536000, immutable"
#: Cache-Control of a 404 (the next-root probe): a new root is visible within a minute.
NOT_FOUND_CACHE_CONTROL = b"public, max-age=60"
#: Metadata files up to this size are kept in memory with their ETag.
CACHE_MAX_FILE_BYTES = 64 * 1024
#: Bound on the bytes of metadata kept in memory per worker.
CACHE_MAX_BYTES = 32 * 1024 * 1024
#: Bound on the number of metadata files whose ETag is kept in memory per worker.
CACHE_MAX_ENTRIES = 65536
#: Bound on the ``If-None-Match`` header value we parse.
MAX_IF_NONE_MATCH_CHARS = 2048

_JSON = b"application/json"
_NOT_FOUND_BODY = b'{"error":"not_found","detail":"no such file in this TUF repository"}'
_METHOD_BODY = b'{"error":"method_not_allowed","detail":"use GET or HEAD"}'


@dataclass(frozen=True)
class _Entry:
    version: tuple[int, int, int]  # (inode, mtime_ns, size): a replaced file has a new inode
    etag: bytes
    body: bytes | None  # None for a file too large to keep in memory


def _route_path(scope: Scope) -> str:
    """The path below the mount point (as :func:`starlette._utils.get_route_path`)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] == "/":
        return path[len(root_path) :]
    return path


def _if_none_match(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return bytes(value)
    return None


def _matches(header: bytes | None, etag: bytes) -> bool:
    """RFC 9110 13.1.2: If-None-Match uses the weak comparison."""
    if header is None or len(header) > MAX_IF_NONE_MATCH_CHARS:
        return False
    if header.strip() == b"*":
        return True
    for candidate in header.split(b","):
        tag = candidate.strip()
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


async def _send(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, head: bool = False
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class TufStaticApp:
    """ASGI app serving every group's repository under ``<home>/blobs/tuf``."""

    def __init__(self, settings: Settings) -> None:
        self.base = tuf_root(settings)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cached_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, as an app mounted at :data:`TUF_PREFIX`."""
        if scope["type"] == "http":
            await self.serve(scope, receive, send, _route_path(scope))

    async def serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Serve one HTTP request for ``path``, the part of the URL path below the prefix."""
        method = scope["method"]
        if method not in {"GET", "HEAD"}:
            await _send(send, 405, [(b"content-type", _JSON), (b"allow", b"GET, HEAD")], _METHOD_BODY)
            return
        head = method == "HEAD"
        parts = path.split("/", 3)
        if len(parts) == 4 and parts[0] == "":
            _, group_id, kind, rest = parts
            try:
                validate_group_id(group_id)
            except TufError:
                pass
            else:
                if kind == "metadata" and is_metadata_name(rest):
                    if await self._metadata(scope, receive, send, group_id, rest, head=head):
                        return
                elif kind == "targets":
                    sha256 = is_served_target_path(rest)
                    if sha256 is not None and await self._target(scope, receive, send, group_id, rest, sha256):
                        return
        await _send(
            send,
            404,
            [(b"content-type", _JSON), (b"cache-control", NOT_FOUND_CACHE_CONTROL)],
            _NOT_FOUND_BODY,
            head=head,
        )

    async def _metadata(
        self, scope: Scope, receive: Receive, send: Send, group_id: str, name: str, *, head: bool
    ) -> bool:
        path = f"{self.base}/{group_id}/metadata/{name}"
        try:
            st = os.stat(path)  # noqa: PTH116 - hot path: a str path avoids building a Path
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_METADATA_BYTES:
            return False
        entry = self._cache.get(path)
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if entry is None or entry.version != version:
            loaded = await self._load(path, version)
            if loaded is None:
                return False
            entry = loaded
        else:
            self._cache.move_to_end(path)
        cache_control = MUTABLE_CACHE_CONTROL if name == TIMESTAMP_FILE else IMMUTABLE_CACHE_CONTROL
        headers = [(b"etag", entry.etag), (b"cache-control", cache_control)]
        if _matches(_if_none_match(scope), entry.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return True
        if entry.body is not None:
            headers.append((b"content-type", _JSON))
            await _send(send, 200, headers, entry.body, head=head)
            return True
        response = FileResponse(
            path, media_type="application/json", headers={k.decode(): v.decode() for k, v in headers}
        )
        await response(scope, receive, send)
        return True

    async def _load(self, path: str, version: tuple[int, int, int]) -> _Entry | None:
        """Read (or hash) a metadata file and cache it; None if it vanished meanwhile."""
        try:
            if version[2] <= CACHE_MAX_FILE_BYTES:
                with open(path, "rb") as fh:  # noqa: ASYNC230, PTH123 - a small file: cheaper than a thread hop
                    body: bytes | None = fh.read(CACHE_MAX_FILE_BYTES + 1)
                    st = os.fstat(fh.fileno())
                digest = hashlib.sha256(body or b"").hexdigest()
            else:
                body = None
                digest, st = await anyio.to_thread.run_sync(_hash_file, path)
        except OSError:
            return None
        # The file read is the version whose stat we hold (a rename swaps the inode).
        entry = _Entry((st.st_ino, st.st_mtime_ns, st.st_size), f'"{digest}"'.encode(), body)
        old = self._cache.pop(path, None)
        if old is not None and old.body is not None:
            self._cached_bytes -= len(old.body)
        self._cache[path] = entry
        self._cached_bytes += len(body or b"")
        while (self._cached_bytes > CACHE_MAX_BYTES or len(self._cache) > CACHE_MAX_ENTRIES) and self._cache:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= len(evicted.body or b"")
        return entry

    async def _target(  # noqa: PLR0917 - the ASGI triple plus what was parsed from the path
        self, scope: Scope, receive: Receive, send: Send, group_id: str, rest: str, sha256: str
    ) -> bool:
        path = f"{self.base}/{group_id}/targets/{rest}"
        try:
            st = os.stat(path)  # noqa: PTH116 - hot path: a str path avoids building a Path
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        etag = f'"{sha256}"'.encode()
        headers = [(b"etag", etag), (b"cache-control", IMMUTABLE_CACHE_CONTROL)]
        if _matches(_if_none_match(scope), etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return True
        response = FileResponse(
            path,
            media_type="application/octet-stream",
            headers={k.decode(): v.decode() for k, v in headers},
            stat_result=st,
        )
        await response(scope, receive, send)
        return True


class TufStaticMiddleware:
    """Serve :data:`TUF_PREFIX` ahead of the rest of the app (its routing, middleware and handlers).

    Added last with ``app.add_middleware``, it is the outermost user middleware:
    a check-in then costs about a fifth of what it costs as a mounted route.
    Every other request passes through untouched.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.tuf = TufStaticApp(settings)
        self._prefix = TUF_PREFIX + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch on the path."""
        if scope["type"] == "http":
            path = _route_path(scope)
            if path.startswith(self._prefix):
                await self.tuf.serve(scope, receive, send, path[len(TUF_PREFIX) :])
                return
        await self.app(scope, receive, send)


def _hash_file(path: str) -> tuple[str, os.stat_result]:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        st = os.fstat(fh.fileno())
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest(), st
