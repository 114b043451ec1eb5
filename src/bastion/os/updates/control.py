"""The OS's control socket: ``DEV/os-state/control.sock`` (unix stream socket, mode 0600).

One request per connection: a JSON object on one line, answered by one JSON
line. Requests longer than :data:`MAX_REQUEST_BYTES` are refused.

========================  ==========================================================
request                   answer
========================  ==========================================================
``{"op": "update-check"}``  the check's summary (``bastion device update-check``)
``{"op": "status"}``        the last summary, installed apps and running apps
anything else             ``{"error": "unknown_op"}`` / ``{"error": "bad_request"}``
========================  ==========================================================

Example:
    >>> request_control(Path("DEV/os-state/control.sock"), {"op": "update-check"})  # doctest: +SKIP
    {'result': 'up-to-date', ...}
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.os.updates.errors import UpdateUnavailableError

__all__ = [
    "CONTROL_SOCKET",
    "MAX_ANSWER_BYTES",
    "MAX_REQUEST_BYTES",
    "ControlServer",
    "request_control",
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

Handler = Callable[[str], dict[str, Any]]

_log = logging.getLogger("bastion.os.control")


def _read_line(conn: socket.socket, limit: int) -> bytes | None:
    data = bytearray()
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data.split(b"\n", 1)[0])


class ControlServer:
    """Serves the control socket in a daemon thread.

    Args:
        path: the socket path (an existing stale socket is replaced).
        handlers: op name -> function of the op returning the JSON answer.
    """

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self._handlers = handlers
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

    def answer(self, line: bytes | None) -> dict[str, Any]:
        """The answer to one request line (``None`` = over the bound)."""
        if line is None:
            return {"error": "bad_request", "detail": f"request is longer than {MAX_REQUEST_BYTES} bytes"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "bad_request", "detail": "request is not JSON"}
        op = request.get("op") if isinstance(request, dict) else None
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"error": "unknown_op", "detail": f"supported: {', '.join(sorted(self._handlers))}"}
        return handler(str(op))

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT_S)
        answer = self.answer(_read_line(conn, MAX_REQUEST_BYTES))
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
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
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
