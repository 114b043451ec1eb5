"""The connection from an app to its OS: one request at a time, replies in order.

The OS passes the app one end of a SOCK_SEQPACKET socketpair; its number is in
``BASTION_APPLIBS_FD``. :func:`connection` opens it once per process.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from bastion.applibs._wire import WireError, close_fds, recv_message, send_message
from bastion.applibs.errors import NotConnectedError, TransportError, error_for

__all__ = ["ENV_FD", "Connection", "channel", "connection"]

#: The environment variable holding the fd of the app's socket to the OS.
ENV_FD = "BASTION_APPLIBS_FD"

_lock = threading.Lock()
_connection: Connection | None = None
_channels: dict[str, Connection] = {}


class Connection:
    """A request/response channel to the OS.

    Args:
        sock: a connected SOCK_SEQPACKET socket whose peer is the OS's applibs server.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._next_id = 1

    def call(self, op: str, args: dict[str, Any] | None = None, fds: tuple[int, ...] = ()) -> dict[str, Any]:
        """Call ``op``; return its result. Received fds are closed (use :meth:`call_fds` to keep them).

        Raises:
            RequestError: the OS refused or failed the request.
            TransportError: the socket failed.
        """
        result, received = self.call_fds(op, args, fds)
        close_fds(received)
        return result

    def call_fds(
        self, op: str, args: dict[str, Any] | None = None, fds: tuple[int, ...] = ()
    ) -> tuple[dict[str, Any], list[int]]:
        """Call ``op``; return its result and the fds the OS passed back (the caller owns them).

        Raises:
            RequestError: the OS refused or failed the request.
            TransportError: the socket failed.
        """
        with self._lock:
            request_id = self._next_id
            self._next_id += 1
            try:
                send_message(self._sock, {"id": request_id, "op": op, "args": args or {}}, fds)
                message = recv_message(self._sock)
            except WireError as exc:
                raise TransportError(str(exc)) from exc
        if message is None:
            raise TransportError("the OS closed the applibs socket")
        reply, received = message
        if reply.get("id") != request_id:
            close_fds(received)
            raise TransportError("the OS answered another request")
        if reply.get("ok") is True:
            result = reply.get("result", {})
            if not isinstance(result, dict):
                close_fds(received)
                raise TransportError("the OS sent a malformed result")
            return result, received
        close_fds(received)
        error = reply.get("error")
        if not isinstance(error, dict):
            raise TransportError("the OS sent a malformed error")
        capability = error.get("capability")
        raise error_for(
            str(error.get("code", "failed")),
            str(error.get("message", "the request failed")),
            capability if isinstance(capability, str) else None,
        )

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def connection() -> Connection:
    """The process's connection to the OS (opened on first use).

    Raises:
        NotConnectedError: ``BASTION_APPLIBS_FD`` is unset or not a socket.
    """
    global _connection  # noqa: PLW0603 - one connection per process, opened lazily
    with _lock:
        if _connection is None:
            value = os.environ.get(ENV_FD)
            if value is None or not value.isdigit():
                raise NotConnectedError(f"{ENV_FD} is not set: this app is not running on a Bastion device")
            try:
                sock = socket.socket(fileno=int(value))
            except OSError as exc:
                raise NotConnectedError(f"{ENV_FD}={value} is not a socket") from exc
            _connection = Connection(sock)
        return _connection


def channel(name: str) -> Connection:
    """A second connection to the OS for calls that wait (one per ``name``, opened on first use).

    A waiting call (``application.receive``, ``sysevent.wait``) on its own
    channel never delays the app's other calls on :func:`connection`. The OS
    bounds how many channels an app holds (see ``applibs.channel``).

    Raises:
        RequestError: the OS refused another channel.
        TransportError: the OS did not pass a socket.
    """
    with _lock:
        existing = _channels.get(name)
    if existing is not None:
        return existing
    _, fds = connection().call_fds("applibs.channel")
    if len(fds) != 1:
        close_fds(fds)
        raise TransportError("the OS did not pass a channel socket")
    try:
        opened = Connection(socket.socket(fileno=fds[0]))
    except OSError as exc:
        close_fds(fds)
        raise TransportError("the OS passed something that is not a socket") from exc
    with _lock:
        if name in _channels:  # another thread opened it meanwhile
            opened.close()
        else:
            _channels[name] = opened
        return _channels[name]
