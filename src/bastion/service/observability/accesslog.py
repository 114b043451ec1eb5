"""The access log's cheap path: a pre-built JSON line, written in batches of one event-loop turn.

Example:
    >>> handler = AccessLogHandler(sys.stderr)  # doctest: +SKIP
    >>> handler.write_line(access_line("GET", "/healthz", 200, 0.4, "ab12", now=time.time()))  # doctest: +SKIP

The stdlib route (``Logger.info`` → ``LogRecord`` → ``findCaller`` →
``JsonFormatter`` → ``StreamHandler.flush``) cost about 110 µs per request on
the build host, most of it in building and walking the record. An access line
has a fixed shape, so :func:`access_line` writes it with one format string
(the message and route are JSON-encoded once per route and status and cached),
and :class:`AccessLogHandler` appends it to a buffer that is written with one
``write`` at the end of the current event-loop turn (``loop.call_soon``), so
under load one system call carries the lines of every request that finished in
that turn, and no line waits longer than that turn. Outside an event loop, or
for an ordinary ``LogRecord`` handed to the handler, the line is written at
once.

The line is the one :class:`bastion.jsonlog.JsonFormatter` writes for the same
request (``ts``, ``level``, ``logger``, ``msg``, ``process``, ``pid``,
``request_id``, ``method``, ``route``, ``status``, ``ms``), and it holds only
those: never a path, a query string or a header. The request id embedded
unescaped is one the middleware made or accepted as ``[A-Za-z0-9._:-]{1,64}``;
anything else is JSON-encoded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import sys
from typing import IO, Any

import orjson

from bastion.jsonlog import MAX_LOG_MESSAGE_CHARS, redact
from bastion.service.observability.logconfig import ACCESS_LOGGER

__all__ = ["MAX_PENDING_LINES", "AccessLogHandler", "access_line"]

#: Bound on the lines buffered within one event-loop turn: past it they are written at once.
MAX_PENDING_LINES = 512

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: ``(method, route, status, process)`` -> the line's fixed parts around ts, pid, request id and ms.
_ENCODED: dict[tuple[str, str, int, str], tuple[str, str]] = {}
_MAX_ENCODED = 4096
_second: list[Any] = [None, ""]  # the last whole second formatted, and its ISO text up to the seconds


def _parts(method: str, route: str, status: int, process: str) -> tuple[str, str]:
    key = (method, route, status, process)
    found = _ENCODED.get(key)
    if found is None:
        message = redact(f"{method} {route} {status}"[:MAX_LOG_MESSAGE_CHARS])
        head = (
            f'Z","level":"info","logger":"{ACCESS_LOGGER}","msg":{orjson.dumps(message).decode()},'
            f'"process":{orjson.dumps(process).decode()},"pid":'
        )
        tail = (
            f',"method":{orjson.dumps(method).decode()},"route":{orjson.dumps(route[:512]).decode()},'
            f'"status":{int(status)},"ms":'
        )
        found = (head, tail)
        if len(_ENCODED) < _MAX_ENCODED:
            _ENCODED[key] = found
    return found


def access_line(
    method: str, route: str, status: int, ms: float, request_id: str, *, now: float, process: str = "service"
) -> str:
    """One access line, the same object :class:`~bastion.jsonlog.JsonFormatter` writes for it (no newline)."""
    head, tail = _parts(method, route, status, process)
    rid = f'"{request_id}"' if _SAFE_ID.fullmatch(request_id) else orjson.dumps(request_id[:64]).decode()
    whole = int(now)
    if _second[0] != whole:
        _second[0] = whole
        _second[1] = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    millis = int((now - whole) * 1000)
    return f'{{"ts":"{_second[1]}.{millis:03d}{head}{os.getpid()},"request_id":{rid}{tail}{float(ms)!r}}}'


class AccessLogHandler(logging.StreamHandler[IO[str]]):
    """A stream handler that takes pre-built lines and writes them once per event-loop turn."""

    def __init__(self, stream: IO[str] | None = None, process: str = "service") -> None:
        """Args: stream: where lines go (stderr by default); process: the role in every line."""
        super().__init__(sys.stderr if stream is None else stream)
        self.process = process
        self._pending: list[str] = []

    def write_line(self, line: str) -> None:
        """Queue ``line``; it is written at the end of this event-loop turn (at once outside a loop)."""
        with self.lock or _NO_LOCK:
            self._pending.append(line)
            first = len(self._pending) == 1
            full = len(self._pending) >= MAX_PENDING_LINES
        if full:
            self.flush()
            return
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no running loop: nothing would flush it later
                self.flush()

    def flush(self) -> None:
        """Write every queued line with one ``write``, then flush the stream."""
        with self.lock or _NO_LOCK:
            lines, self._pending = self._pending, []
            if lines and self.stream is not None:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                except (OSError, ValueError):  # a closed or broken stream: the lines are lost, the request is not
                    return
            super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        """An ordinary record (another caller of the access logger): queued behind the pending lines."""
        try:
            self.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - the stdlib contract: a handler never raises into its caller
            self.handleError(record)

    def close(self) -> None:
        """Write what is queued, then close as a StreamHandler does."""
        self.flush()
        super().close()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()
