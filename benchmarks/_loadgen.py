"""A small HTTP/1.1 keep-alive load generator for the benchmarks.

It is deliberately minimal (asyncio streams, no HTTP library) so that the load
generator costs little CPU on the same two cores as the server it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoadResult", "Session", "cpu_seconds", "get", "run_clients", "wait_for_port"]


class Session:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Session:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes, dict[bytes, bytes]]:
        """Send one request; return the status, body and lower-cased headers."""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = int((await self.reader.readline()).split()[1])
        answer_headers: dict[bytes, bytes] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            answer_headers[name.strip().lower()] = value.strip()
        length = int(answer_headers.get(b"content-length", b"0"))
        return status, await self.reader.readexactly(length), answer_headers

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes, dict[bytes, bytes]]:
        return await self.request("GET", path, headers=headers)

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes, dict[bytes, bytes]]:
        return await self.request("POST", path, body, {"Content-Type": content_type})

    def close(self) -> None:
        self.writer.close()


async def get(port: int, path: str) -> tuple[int, bytes, dict[bytes, bytes]]:
    """One GET on a fresh connection."""
    session = await Session.open(port)
    try:
        return await session.get(path)
    finally:
        session.close()


@dataclass(frozen=True)
class LoadResult:
    ok: int
    failed: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds


async def run_clients(
    port: int,
    one: Callable[[Session], Awaitable[bool]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> LoadResult:
    """Run ``one`` in a loop on ``concurrency`` connections; count what finishes after the warm-up."""
    ok = failed = 0
    start = time.perf_counter() + warmup
    stop = start + seconds

    async def worker() -> None:
        nonlocal ok, failed
        session = await Session.open(port)
        try:
            while time.perf_counter() < stop:
                good = await one(session)
                if time.perf_counter() >= start:
                    ok, failed = (ok + 1, failed) if good else (ok, failed + 1)
        finally:
            session.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(ok, failed, seconds)


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids.extend(_process_tree(int(child)))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (from /proc)."""
    total = 0
    for each in _process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")
