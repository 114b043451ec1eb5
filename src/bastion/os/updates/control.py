"""The OS's control socket: ``DEV/os-state/control.sock`` (unix stream socket, mode 0600).

One request per connection: a JSON object on one line, answered by one JSON
line. Requests longer than :data:`MAX_REQUEST_BYTES` are refused. An *upload*
op (e.g. ``sideload``) says ``"size": N`` in its request line; the OS answers
``{"continue": true}`` if N is within the op's bound (else its refusal, and the
exchange ends), then the client sends exactly N raw bytes, which the OS spools
to a file, and the OS answers once they are all in.

==============================  ==========================================================
request                         answer
==============================  ==========================================================
``{"op": "update-check"}``      the check's summary (``bastion device update-check``)
``{"op": "status"}``            the last summary, installed apps and running apps
local device API ops            see :mod:`bastion.os.devmode.local_api`
anything else                   ``{"error": "unknown_op"}`` / ``{"error": "bad_request"}``
==============================  ==========================================================

Example:
    >>> request_control(Path("DEV/os-state/control.sock"), {"op": "update-check"})  # doctest: +SKIP
    {'result': 'up-to-date', ...}
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.os.updates.errors import UpdateUnavailableError

__all__ = [
    "CONTROL_SOCKET",
    "MAX_ANSWER_BYTES",
    "MAX_REQUEST_BYTES",
    "ControlServer",
    "RequestHandler",
    "Upload",
    "UploadHandler",
    "request_control",
    "upload_control",
]

CONTROL_SOCKET = "control.sock"
#: Bound on one request line.
MAX_REQUEST_BYTES = 4096
#: Bound on one answer line (read by the CLI).
MAX_ANSWER_BYTES = 256 * 1024
#: How long a client may take to send its request.
REQUEST_TIMEOUT_S = 5.0
#: How long the CLI waits for an answer (a check downloads images).
ANSWER_TIMEOUT_S = 600.0
_ACCEPT_POLL_S = 0.5

#: An op that needs nothing but its name.
Handler = Callable[[str], dict[str, Any]]
#: An op that reads its arguments from the request object.
RequestHandler = Callable[[dict[str, Any]], dict[str, Any]]
#: An upload op: the request object and the spooled file of its bytes (removed afterwards).
UploadHandler = Callable[[dict[str, Any], Path], dict[str, Any]]
#: Chunk size of uploads.
_CHUNK = 64 * 1024
#: The OS's go-ahead for the bytes of an upload.
_CONTINUE = b'{"continue": true}\n'


@dataclass(frozen=True)
class Upload:
    """An upload op: its handler, its bound and where its bytes are spooled."""

    handler: UploadHandler
    max_bytes: int
    spool_dir: Path


_log = logging.getLogger("bastion.os.control")


def _read_line_and_rest(conn: socket.socket, limit: int) -> tuple[bytes | None, bytes]:
    """The first line (None if over ``limit``) and whatever arrived after its newline."""
    data = bytearray()
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit + 1 and b"\n" not in data[: limit + 1]:
            return None, b""
    line, _, rest = bytes(data).partition(b"\n")
    if len(line) > limit:
        return None, b""
    return line, rest


def _read_line(conn: socket.socket, limit: int) -> bytes | None:
    return _read_line_and_rest(conn, limit)[0]


class ControlServer:
    """Serves the control socket in a daemon thread.

    Args:
        path: the socket path (an existing stale socket is replaced).
        handlers: op name -> function of the op returning the JSON answer.
        requests: op name -> function of the whole request object.
        uploads: op name -> an upload op (its bytes follow the request line).
    """

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        *,
        requests: dict[str, RequestHandler] | None = None,
        uploads: dict[str, Upload] | None = None,
    ) -> None:
        self.path = path
        self._handlers = handlers
        self._requests = dict(requests or {})
        self._uploads = dict(uploads or {})
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock.bind(str(path))
        path.chmod(0o600)  # the state directory is 0700 as well
        self._sock.listen(4)
        self._sock.settimeout(_ACCEPT_POLL_S)
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving, wait for a request in progress, and remove the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._handle(conn)
                except OSError as exc:
                    _log.info("control client went away: %s", exc)

    def _parse(self, line: bytes | None) -> tuple[dict[str, Any], str] | dict[str, Any]:
        """The request and its op, or the error answer."""
        if line is None:
            return {"error": "bad_request", "detail": f"request is longer than {MAX_REQUEST_BYTES} bytes"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "bad_request", "detail": "request is not JSON"}
        op = request.get("op") if isinstance(request, dict) else None
        if not isinstance(op, str) or not (op in self._handlers or op in self._requests or op in self._uploads):
            ops = sorted({*self._handlers, *self._requests, *self._uploads})
            return {"error": "unknown_op", "detail": f"supported: {', '.join(ops)}"}
        return request, op

    def answer(self, line: bytes | None) -> dict[str, Any]:
        """The answer to one request line (``None`` = over the bound); upload ops need :meth:`_handle`."""
        parsed = self._parse(line)
        if isinstance(parsed, dict):
            return parsed
        request, op = parsed
        if op in self._handlers:
            return self._handlers[op](op)
        if op in self._requests:
            return self._requests[op](request)
        return {"error": "bad_request", "detail": f"{op} sends its bytes after the request line"}

    def _upload(self, conn: socket.socket, request: dict[str, Any], upload: Upload, rest: bytes) -> dict[str, Any]:
        size = request.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return {"error": "bad_request", "detail": 'an upload says "size": <bytes> in its request line'}
        if size > upload.max_bytes:
            return {"error": "too_large", "detail": f"at most {upload.max_bytes} bytes"}
        upload.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn.sendall(_CONTINUE)
        fd, name = tempfile.mkstemp(prefix=".upload.", dir=upload.spool_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as spool:
                received = rest[:size]
                spool.write(received)
                count = len(received)
                while count < size:
                    chunk = conn.recv(min(_CHUNK, size - count))
                    if not chunk:
                        return {"error": "bad_request", "detail": f"the upload ended after {count} of {size} bytes"}
                    spool.write(chunk)
                    count += len(chunk)
            return upload.handler(request, path)
        finally:
            path.unlink(missing_ok=True)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT_S)
        line, rest = _read_line_and_rest(conn, MAX_REQUEST_BYTES)
        parsed = self._parse(line)
        if isinstance(parsed, tuple) and parsed[1] in self._uploads:
            answer = self._upload(conn, parsed[0], self._uploads[parsed[1]], rest)
        else:
            answer = self.answer(line)
        data = json.dumps(answer, default=str).encode()
        if len(data) > MAX_ANSWER_BYTES:
            data = json.dumps({"error": "answer_too_large"}).encode()
        conn.settimeout(None)
        conn.sendall(data + b"\n")


def request_control(path: Path, request: dict[str, Any], *, timeout: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
    """Send one request to a running OS and return its answer (used by the CLI).

    Raises:
        UpdateUnavailableError: no OS is listening, or the answer is malformed.
    """
    return _exchange(path, request, None, timeout)


def upload_control(
    path: Path, request: dict[str, Any], source: Path, *, timeout: float = ANSWER_TIMEOUT_S
) -> dict[str, Any]:
    """Send an upload op with the bytes of ``source`` and return the OS's answer.

    Raises:
        UpdateUnavailableError: no OS is listening, ``source`` cannot be read,
            or the answer is malformed.
    """
    return _exchange(path, request, source, timeout)


def _exchange(path: Path, request: dict[str, Any], source: Path | None, timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            if source is None:
                sock.sendall(json.dumps(request).encode() + b"\n")
                line = _read_line(sock, MAX_ANSWER_BYTES)
            else:
                with source.open("rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    sock.sendall(json.dumps({**request, "size": size}).encode() + b"\n")
                    line = _read_line(sock, MAX_ANSWER_BYTES)
                    if line is not None and line + b"\n" == _CONTINUE:
                        sent = 0
                        while sent < size and (chunk := handle.read(_CHUNK)):
                            sock.sendall(chunk[: size - sent])
                            sent += len(chunk)
                        line = _read_line(sock, MAX_ANSWER_BYTES)
        except OSError as exc:
            raise UpdateUnavailableError(f"the OS is not answering on {path}: {exc.strerror or exc}") from exc
    try:
        answer = json.loads(line) if line else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise UpdateUnavailableError("the OS sent a malformed answer")
    return answer
