"""The ETag-caching ngclient fetcher, against httpx.MockTransport."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tuf.api import exceptions as tuf_exceptions
from tuf.api.exceptions import DownloadError

from bastion.os.updates.fetcher import CachingFetcher, FetcherLimits, is_cacheable, is_resumable

BASE = "http://svc/tuf/g1/metadata/"


class Files:
    """Static files with ETags; records the conditional headers it sees."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"timestamp.json": b'{"v": 1}', "1.snapshot.json": b"snap"}
        self.seen: list[tuple[str, str | None]] = []
        self.etag_on_404 = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[1]
        self.seen.append((name, request.headers.get("if-none-match")))
        if name not in self.files:
            headers = {"ETag": '"missing"'} if self.etag_on_404 else {}
            if request.headers.get("if-none-match") == '"missing"':
                return httpx.Response(304, headers=headers)
            return httpx.Response(404, headers=headers)
        etag = f'"{len(self.files[name])}-{hash(self.files[name]) & 0xFFFF}"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(200, content=self.files[name], headers={"ETag": etag})


def fetcher(files: Files, **limits: int) -> CachingFetcher:
    return CachingFetcher(httpx.Client(transport=httpx.MockTransport(files)), limits=FetcherLimits(**limits))


def test_only_timestamp_and_root_probe_are_cacheable() -> None:
    assert is_cacheable(BASE + "timestamp.json")
    assert is_cacheable(BASE + "2.root.json")
    assert not is_cacheable(BASE + "2.snapshot.json")
    assert not is_cacheable(BASE + "root.json")
    assert not is_cacheable("http://svc/tuf/g1/targets/apps/x/abc.1.0.0.img")


def test_timestamp_is_fetched_conditionally_and_served_from_cache_on_304() -> None:
    files = Files()
    f = fetcher(files)
    assert f.download_bytes(BASE + "timestamp.json", 1000) == b'{"v": 1}'
    assert f.download_bytes(BASE + "timestamp.json", 1000) == b'{"v": 1}'
    assert files.seen[0] == ("timestamp.json", None)
    assert files.seen[1][1] is not None  # If-None-Match sent
    assert f.stats.not_modified == 1
    files.files["timestamp.json"] = b'{"v": 2}'  # a new version: 200 with the new body, cached again
    assert f.download_bytes(BASE + "timestamp.json", 1000) == b'{"v": 2}'
    assert f.download_bytes(BASE + "timestamp.json", 1000) == b'{"v": 2}'
    assert f.stats.not_modified == 2


def test_versioned_files_are_never_conditional() -> None:
    files = Files()
    f = fetcher(files)
    f.download_bytes(BASE + "1.snapshot.json", 1000)
    f.download_bytes(BASE + "1.snapshot.json", 1000)
    assert files.seen == [("1.snapshot.json", None), ("1.snapshot.json", None)]


def test_root_probe_404_is_cached_and_replayed_as_404() -> None:
    files = Files()
    f = fetcher(files)
    for _ in range(2):
        with pytest.raises(tuf_exceptions.DownloadHTTPError) as info:
            f.download_bytes(BASE + "2.root.json", 1000)
        assert info.value.status_code == 404
    assert files.seen[1] == ("2.root.json", '"missing"')
    assert f.stats.not_modified == 1


def test_cache_is_bounded() -> None:
    files = Files()
    for n in range(2, 6):
        files.files[f"{n}.root.json"] = b"r" * 100
    f = fetcher(files, max_cache_entries=2)
    for n in range(2, 6):
        f.download_bytes(BASE + f"{n}.root.json", 1000)
    f.download_bytes(BASE + "2.root.json", 1000)  # evicted: fetched without If-None-Match
    assert files.seen[-1] == ("2.root.json", None)
    big = fetcher(files, max_cached_body_bytes=4)
    big.download_bytes(BASE + "timestamp.json", 1000)
    big.download_bytes(BASE + "timestamp.json", 1000)
    assert files.seen[-1][1] is None  # too large to cache


def test_overlong_body_is_a_length_error_and_not_cached() -> None:
    files = Files()
    files.files["timestamp.json"] = b"x" * 5000
    f = fetcher(files)
    with pytest.raises(tuf_exceptions.DownloadLengthMismatchError):
        f.download_bytes(BASE + "timestamp.json", 100)
    f.download_bytes(BASE + "timestamp.json", 10_000)
    assert files.seen[-1][1] is None


def test_transport_errors_and_http_errors_are_download_errors() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    f = CachingFetcher(httpx.Client(transport=httpx.MockTransport(broken)))
    with pytest.raises(tuf_exceptions.DownloadError):
        f.download_bytes(BASE + "timestamp.json", 100)
    g = CachingFetcher(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503))))
    with pytest.raises(tuf_exceptions.DownloadHTTPError) as info:
        g.download_bytes(BASE + "timestamp.json", 100)
    assert info.value.status_code == 503


TARGET_URL = "http://svc/tuf/g/targets/apps/x/" + "ab" * 32 + ".1.0.0.img"


class _RangeServer:
    """Serves one target with Range support; can cut the connection after N bytes."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        wanted = request.headers.get("range")
        self.ranges.append(wanted)
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        if start >= len(self.body):
            return httpx.Response(416)
        body = self.body[start:]
        cut = self.cut_after

        def stream() -> Iterator[bytes]:
            for i in range(0, len(body), 1000):
                if cut is not None and i >= cut:
                    raise httpx.ReadError("connection lost")
                yield body[i : i + 1000]

        return httpx.Response(206 if wanted else 200, content=stream())


def test_interrupted_target_download_resumes_with_range(tmp_path: Path) -> None:
    body = bytes(range(256)) * 40  # 10 240 bytes
    server = _RangeServer(body)
    client = httpx.Client(transport=httpx.MockTransport(server))
    # Bytes are kept as they are handed on, a read (chunk_bytes) at a time.
    f = CachingFetcher(client, partial_dir=tmp_path, limits=FetcherLimits(chunk_bytes=1000))
    server.cut_after = 4000
    with pytest.raises(DownloadError):
        f.download_bytes(TARGET_URL, len(body))
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [4000]  # the bytes received so far are kept
    server.cut_after = None
    assert f.download_bytes(TARGET_URL, len(body)) == body
    assert server.ranges == [None, "bytes=4000-"]
    assert f.stats.resumed == 1
    assert list(tmp_path.iterdir()) == []  # a finished download leaves no partial file


def test_server_ignoring_the_range_restarts_the_file(tmp_path: Path) -> None:
    body = b"x" * 5000
    (tmp_path / (hashlib.sha256(TARGET_URL.encode()).hexdigest() + ".part")).write_bytes(b"stale" * 300)
    f = CachingFetcher(
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=body))), partial_dir=tmp_path
    )
    assert f.download_bytes(TARGET_URL, len(body)) == body


def test_partial_longer_than_the_file_is_dropped(tmp_path: Path) -> None:
    body = b"y" * 3000
    partial = tmp_path / (hashlib.sha256(TARGET_URL.encode()).hexdigest() + ".part")
    partial.write_bytes(b"z" * 4000)
    server = _RangeServer(body)
    f = CachingFetcher(httpx.Client(transport=httpx.MockTransport(server)), partial_dir=tmp_path)
    with pytest.raises(DownloadError):
        f.download_bytes(TARGET_URL, len(body))  # 416: what was kept does not fit
    assert not partial.exists()
    assert f.download_bytes(TARGET_URL, len(body)) == body


def test_metadata_is_never_resumed(tmp_path: Path) -> None:
    assert is_resumable(TARGET_URL)
    assert not is_resumable("http://svc/tuf/g/metadata/3.targets.json")
    assert not is_resumable("http://svc/tuf/g/targets/apps/x/1.0.0.img")  # not hash-prefixed
