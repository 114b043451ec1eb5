"""An emulated UART: the app's end of a byte stream, bridged to a unix socket anyone can attach to.

An app that opens a UART gets one end of a ``SOCK_STREAM`` socketpair (by
SCM_RIGHTS, as Azure Sphere's ``UART_Open`` returns an fd). The OS keeps the
other end and serves ``DEV/periph/uart-ISU0.sock``: what the app writes goes to
every attached client, what a client writes reaches the app. ``bastion device
uart --dir DEV ISU0`` attaches the terminal; a test attaches a socket.

The socket lives in the device directory, not in the OS's mount namespace, so a
host-side tool can reach it (a pty made inside the OS's namespace could not be).
Baud rate, parity and flow control are not emulated: bytes move as fast as both
sides read. Buffers are bounded (:class:`UartLimits`); when one is full, new
bytes are dropped and counted, like a FIFO overrun.

Example::

    os_end, app_end = socket.socketpair()
    bridge = UartBridge(board.uart_socket("ISU0"), os_end)
    bridge.start()
    ... pass app_end to the app ...
    client = connect_uart(board.uart_socket("ISU0"))
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["UartBridge", "UartLimits", "connect_uart", "unix_address"]

#: AF_UNIX paths longer than this (sun_path is 108 bytes with its NUL) go through /proc/self/fd.
_MAX_UNIX_PATH = 100

_log = logging.getLogger("bastion.hw.uart")


@dataclass(frozen=True)
class UartLimits:
    """Bounds of one emulated UART.

    Attributes:
        max_clients: clients attached at once (more are refused at accept).
        buffer_bytes: bytes held for a slow reader, per direction and client.
        chunk_bytes: bytes moved per read.
    """

    max_clients: int = 4
    buffer_bytes: int = 64 * 1024
    chunk_bytes: int = 4096


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """Yield an AF_UNIX address for ``path``; a long path goes through ``/proc/self/fd/N/name``."""
    text = os.fspath(path)
    if len(text.encode()) <= _MAX_UNIX_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def connect_uart(path: Path, *, timeout: float | None = 5.0) -> socket.socket:
    """Attach to an open UART's socket.

    Raises:
        OSError: nothing serves it (no app has the UART open).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with unix_address(path) as address:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


class _Peer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()


class UartBridge:
    """Serves one open UART in a thread: app end <-> clients of ``socket_path``.

    Args:
        socket_path: where to listen (an old socket there is replaced).
        app_side: the OS's end of the socketpair whose other end the app holds.
        limits: bounds.

    Attributes:
        to_clients: bytes the app wrote (delivered or not).
        to_app: bytes clients wrote (delivered or not).
        dropped: bytes dropped because a buffer was full.
    """

    def __init__(self, socket_path: Path, app_side: socket.socket, limits: UartLimits | None = None) -> None:
        self.path = socket_path
        self.limits = limits or UartLimits()
        self._app = _Peer(app_side)
        self._clients: list[_Peer] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._run, name=f"uart-{socket_path.name}", daemon=True)
        self._closing = threading.Event()
        self.to_clients = self.to_app = self.dropped = 0

    def start(self) -> None:
        """Listen and start serving.

        Raises:
            OSError: the socket cannot be made.
        """
        self.path.unlink(missing_ok=True)
        with unix_address(self.path) as address:
            self._listener.bind(address)
        self.path.chmod(0o660)
        self._listener.listen(self.limits.max_clients)
        for sock in (self._listener, self._app.sock, self._wake_r):
            sock.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._app.sock, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether it still serves (the app has not closed its end)."""
        return self._thread.is_alive()

    @property
    def clients(self) -> int:
        """Clients attached now."""
        return len(self._clients)

    def _interest(self, peer: _Peer) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.pending else 0)
        self._selector.modify(peer.sock, events)

    def _queue(self, peer: _Peer, data: bytes) -> None:
        room = self.limits.buffer_bytes - len(peer.pending)
        if room < len(data):
            self.dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if data:
            peer.pending += data
            self._interest(peer)

    def _drop_client(self, peer: _Peer) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(peer.sock)
        with contextlib.suppress(ValueError):
            self._clients.remove(peer)
        peer.sock.close()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._clients) >= self.limits.max_clients:
            sock.close()
            return
        sock.setblocking(False)
        peer = _Peer(sock)
        self._clients.append(peer)
        self._selector.register(sock, selectors.EVENT_READ)

    def _flush(self, peer: _Peer) -> bool:
        try:
            sent = peer.sock.send(peer.pending)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        del peer.pending[:sent]
        self._interest(peer)
        return True

    def _read(self, peer: _Peer) -> bytes | None:
        try:
            data = peer.sock.recv(self.limits.chunk_bytes)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                _log.info("uart %s: %s", self.path.name, exc)
            return None
        return data or None

    def _step(self, key: selectors.SelectorKey, mask: int) -> bool:
        sock = key.fileobj
        if sock is self._wake_r:
            return False
        if sock is self._listener:
            self._accept()
            return True
        if sock is self._app.sock:
            return self._step_app(mask)
        peer = next((c for c in self._clients if c.sock is sock), None)
        if peer is not None:
            self._step_client(peer, mask)
        return True

    def _step_app(self, mask: int) -> bool:
        """Move the app's bytes; ``False`` once the app closed the UART."""
        if mask & selectors.EVENT_WRITE and not self._flush(self._app):
            return False
        if mask & selectors.EVENT_READ:
            data = self._read(self._app)
            if data is None:
                return False
            self.to_clients += len(data)
            for client in self._clients:
                self._queue(client, data)
        return True

    def _step_client(self, peer: _Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and not self._flush(peer):
            self._drop_client(peer)
            return
        if mask & selectors.EVENT_READ:
            data = self._read(peer)
            if data is None:
                self._drop_client(peer)
            elif data:
                self.to_app += len(data)
                self._queue(self._app, data)

    def _run(self) -> None:
        try:
            running = True
            while running and not self._closing.is_set():
                for key, mask in self._selector.select():
                    if not self._step(key, mask):
                        running = False
                        break
        finally:
            self._teardown()

    def _teardown(self) -> None:
        for client in list(self._clients):
            self._drop_client(client)
        self._selector.close()
        self._listener.close()
        self._app.sock.close()
        self._wake_r.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving: clients are detached, the app's end is closed, the socket file removed."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        elif not self._thread.is_alive() and self._thread.ident is None:
            self._teardown()
        self._wake_w.close()
