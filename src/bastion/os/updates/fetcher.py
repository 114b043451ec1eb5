"""ngclient's network access: a ``FetcherInterface`` over httpx with ETag caching.

A check-in that finds nothing new costs what the TUF client workflow needs: the
probe for the next root version (usually a 404) and ``timestamp.json``. For those
two, and only those, the fetcher remembers the last answer with its ``ETag`` and
sends ``If-None-Match``; a ``304 Not Modified`` is served from the cache, so the
service sends no body. Everything else (versioned metadata, targets) is
immutable and fetched plainly. ngclient still verifies every byte it is given,
cached or not, so the cache cannot weaken TUF's checks.

Targets need a **download credential** (docs/adr/0013-update-eligibility.md): with an
``authorization`` (:class:`~bastion.os.updates.download_credential.DownloadCredentials`),
every target request carries ``Authorization: Bastion-Download <credential>``;
a credential the server refuses as expired or invalid (401) is dropped and one
fresh one is tried. Metadata requests carry nothing.

Targets (hash-prefixed, so immutable) are **resumable**: with a ``partial_dir``,
the bytes received so far are kept in a partial file; a later attempt sends
``Range: bytes=<n>-`` and replays the kept bytes before the new ones (a server
that ignores the range and answers ``200`` restarts the file). The partial file is
removed once a download has run to its end, so a download whose hash ngclient
then refuses starts afresh next time. ngclient verifies length and hashes of
the whole stream either way.

Example:
    >>> import httpx
    >>> fetcher = CachingFetcher(httpx.Client())  # doctest: +SKIP
    >>> fetcher.download_bytes("https://svc/tuf/g/metadata/timestamp.json", 16384)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient.fetcher import FetcherInterface

from bastion.os.updates.download_credential import DownloadCredentials

__all__ = ["CachingFetcher", "FetcherLimits", "is_cacheable", "is_resumable", "is_target"]

_CACHEABLE = re.compile(r"/(timestamp\.json|[1-9]\d{0,9}\.root\.json)$")
#: Target files are named ``<sha256>.<name>`` under ``.../targets/`` (consistent snapshots).
_TARGET = re.compile(r"/targets/(?:.+/)?[0-9a-f]{64}\.[^/]+$")


def is_resumable(url: str) -> bool:
    """Whether ``url`` names a hash-prefixed (immutable) target file."""
    return _TARGET.search(httpx.URL(url).path) is not None


def is_target(url: str) -> bool:
    """Whether ``url`` names a target (it needs the download credential)."""
    return "/targets/" in httpx.URL(url).path


def is_cacheable(url: str) -> bool:
    """Whether ``url`` names ``timestamp.json`` or a versioned root (the root probe)."""
    return _CACHEABLE.search(httpx.URL(url).path) is not None


@dataclass(frozen=True)
class FetcherLimits:
    """Bounds of the fetcher.

    Attributes:
        chunk_bytes: read size while streaming.
        total_timeout_s: a whole download must finish within this (slow-retrieval bound);
            per-read timeouts come from the httpx client.
        max_cache_entries: how many URLs the ETag cache remembers.
        max_cache_bytes: total bytes of cached bodies.
        max_cached_body_bytes: a larger body is not cached.
        max_partial_bytes: a kept partial download larger than this is discarded.
    """

    chunk_bytes: int = 64 * 1024
    total_timeout_s: float = 600.0
    max_cache_entries: int = 16
    max_cache_bytes: int = 1024 * 1024
    max_cached_body_bytes: int = 512 * 1024
    max_partial_bytes: int = 256 * 1024 * 1024


@dataclass
class _Entry:
    etag: str
    status: int  # 200, or 404 for a cached "no next root"
    body: bytes


@dataclass
class FetchStats:
    """Counters for tests and benchmarks."""

    requests: int = 0
    not_modified: int = 0
    bytes_received: int = 0
    resumed: int = 0


class CachingFetcher(FetcherInterface):
    """Fetch over an ``httpx.Client`` with conditional requests for the two polled files.

    Args:
        http: the client (timeouts, TLS trust, no env proxies are its business).
        limits: bounds.
        partial_dir: where interrupted target downloads are kept to resume; None
            turns resuming off.
        authorization: the download credential sent with target requests; None sends none.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        limits: FetcherLimits | None = None,
        partial_dir: Path | None = None,
        authorization: DownloadCredentials | None = None,
    ) -> None:
        self._http = http
        self._authorization = authorization
        self._limits = limits or FetcherLimits()
        self._partial_dir = partial_dir
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = FetchStats()

    def _cached(self, url: str) -> _Entry | None:
        with self._lock:
            entry = self._cache.get(url)
            if entry is not None:
                self._cache.move_to_end(url)
            return entry

    def _store(self, url: str, entry: _Entry) -> None:
        limits = self._limits
        if len(entry.body) > limits.max_cached_body_bytes:
            return
        with self._lock:
            self._cache[url] = entry
            self._cache.move_to_end(url)
            while len(self._cache) > limits.max_cache_entries or (
                sum(len(e.body) for e in self._cache.values()) > limits.max_cache_bytes
            ):
                self._cache.popitem(last=False)

    def _get(self, url: str, headers: dict[str, str], auth: DownloadCredentials | None) -> httpx.Response:
        if auth is not None:
            headers = {**headers, "Authorization": auth.authorization()}
        self.stats.requests += 1
        try:
            return self._http.send(self._http.build_request("GET", url, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            raise tuf_exceptions.DownloadError(f"GET {httpx.URL(url).path}: {type(exc).__name__}") from exc

    def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """GET ``url`` (streamed); a target request carries the download credential, renewed once on a 401.

        Raises:
            tuf.api.exceptions.DownloadHTTPError: the server refused the credential (the
                message names its error code).
        """
        auth = self._authorization if is_target(url) else None
        response = self._get(url, headers, auth)
        if auth is None or response.status_code not in (401, 403):
            return response
        auth.invalidate()
        if response.status_code == 401:  # expired meanwhile (or the key changed): one fresh credential
            response.close()
            response = self._get(url, headers, auth)
            if response.status_code not in (401, 403):
                return response
            auth.invalidate()
        code = _error_code(response)
        raise tuf_exceptions.DownloadHTTPError(
            f"GET {httpx.URL(url).path}: HTTP {response.status_code} ({code})", response.status_code
        )

    def _fetch(self, url: str) -> Iterator[bytes]:
        if self._partial_dir is not None and is_resumable(url):
            return self._fetch_resumable(url, self._partial_dir)
        cacheable = is_cacheable(url)
        entry = self._cached(url) if cacheable else None
        headers = {"If-None-Match": entry.etag} if entry is not None else {}
        response = self._send(url, headers)
        status = response.status_code
        if status == 304 and entry is not None:
            response.close()
            self.stats.not_modified += 1
            if entry.status != 200:
                raise tuf_exceptions.DownloadHTTPError("not found (cached)", entry.status)
            return iter((entry.body,))
        etag = response.headers.get("etag")
        if status != 200:
            response.close()
            if cacheable and etag and status == 404:
                self._store(url, _Entry(etag, 404, b""))
            raise tuf_exceptions.DownloadHTTPError(f"GET {httpx.URL(url).path}: HTTP {status}", status)
        if cacheable and etag:
            return self._caching_body(url, etag, response)
        return self._body(response)

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        deadline = time.monotonic() + self._limits.total_timeout_s
        try:
            for chunk in response.iter_bytes(self._limits.chunk_bytes):
                if time.monotonic() > deadline:
                    raise tuf_exceptions.SlowRetrievalError("download took longer than its bound")
                self.stats.bytes_received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise tuf_exceptions.DownloadError(f"download interrupted: {type(exc).__name__}") from exc
        finally:
            response.close()

    def _body(self, response: httpx.Response) -> Iterator[bytes]:
        yield from self._chunks(response)

    def _fetch_resumable(self, url: str, partial_dir: Path) -> Iterator[bytes]:
        partial_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = partial_dir / (hashlib.sha256(url.encode()).hexdigest() + ".part")
        have = partial.stat().st_size if partial.is_file() else 0
        if have > self._limits.max_partial_bytes:
            partial.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        response = self._send(url, headers)
        status = response.status_code
        if status == 206 and have:
            self.stats.resumed += 1
        elif status == 200:
            have = 0  # the server sent the whole file: start over
        else:
            response.close()
            partial.unlink(missing_ok=True)  # e.g. 416: what we kept does not fit this file
            raise tuf_exceptions.DownloadHTTPError(f"GET {httpx.URL(url).path}: HTTP {status}", status)
        return self._resumed_body(partial, have, response)

    def _resumed_body(self, partial: Path, have: int, response: httpx.Response) -> Iterator[bytes]:
        complete = False
        try:
            with partial.open("r+b" if have else "wb") as kept:
                kept.truncate(have)
                while have and (chunk := kept.read(self._limits.chunk_bytes)):
                    yield chunk
                for chunk in self._chunks(response):
                    kept.write(chunk)
                    kept.flush()
                    yield chunk
            complete = True
        finally:
            response.close()
            if complete:
                partial.unlink(missing_ok=True)

    def _caching_body(self, url: str, etag: str, response: httpx.Response) -> Iterator[bytes]:
        kept = bytearray()
        complete = False
        try:
            for chunk in self._chunks(response):
                if len(kept) <= self._limits.max_cached_body_bytes:
                    kept += chunk
                yield chunk
            complete = True
        finally:
            if complete:
                self._store(url, _Entry(etag, 200, bytes(kept)))


#: Bound on a refusal body read for its error code.
_MAX_ERROR_BODY_BYTES = 1024


def _error_code(response: httpx.Response) -> str:
    """The ``error`` code of a small JSON error body (the response is closed)."""
    body = b""
    try:
        for chunk in response.iter_bytes(256):
            body += chunk
            if len(body) > _MAX_ERROR_BODY_BYTES:
                return "error"
    except httpx.HTTPError:
        return "error"
    finally:
        response.close()
    try:
        value = json.loads(body)
    except ValueError:
        return "error"
    code = value.get("error") if isinstance(value, dict) else None
    return code[:64] if isinstance(code, str) else "error"
