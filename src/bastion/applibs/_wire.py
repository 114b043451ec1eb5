"""The applibs wire format: one JSON object per SOCK_SEQPACKET message, fds by SCM_RIGHTS.

Both ends use this module: the library inside the app sandbox and the OS's
applibs server (:mod:`bastion.os.appservices`). It imports only the standard
library, because it runs inside the sandbox.

Messages::

    request   {"id": 7, "op": "storage.write", "args": {...}}          (+ fds)
    reply     {"id": 7, "ok": true, "result": {...}}                    (+ fds)
    error     {"id": 7, "ok": false, "error": {"code": "permission_denied",
               "capability": "MutableStorage", "message": "..."}}

Bytes travel as base64 text in fields whose names end in ``_b64``. A message is
at most :data:`MAX_MESSAGE_BYTES` and carries at most :data:`MAX_FDS` fds; a
larger one is refused by the receiver.
"""

from __future__ import annotations

import array
import json
import json.encoder
import json.scanner
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_FDS", "MAX_MESSAGE_BYTES", "WireError", "close_fds", "recv_message", "send_message"]

#: Bound on one message (request or reply), in bytes.
MAX_MESSAGE_BYTES = 128 * 1024  # below the default socket buffer (wmem_default), so any message fits one datagram
#: Bound on the fds one message carries.
MAX_FDS = 4

# Made once, not per message: json.dumps with options builds a new encoder each call (and
# JSONEncoder.encode a new C encoder), recv_fds allocates (at this size: maps and unmaps) a fresh
# 128 KiB buffer each call, and the flag enums are slow to combine. Measured by benchmarks/sandbox.py.


def _not_json(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _make_encode() -> Callable[[object], str]:
    """Compact ASCII JSON: the C encoder made once where CPython has it, else the stdlib's encoder."""
    fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring_ascii", None)
    if make is None or quote is None:
        return fallback
    encoder = make(None, _not_json, quote, None, ":", ",", False, False, True)

    def encode(value: object) -> str:
        return "".join(encoder(value, 0))

    sample = {"a": [1, 2.5, None, True, "\u00e9\n"], "b": {}}
    return encode if encode(sample) == fallback(sample) else fallback


def _make_decode() -> Callable[[str], object]:
    """One JSON value filling the whole text: the C scanner made once where CPython has it."""
    decoder = json.JSONDecoder()
    # The C scanner where CPython has it (typeshed types make_scanner as the class it names).
    scan: Callable[[str, int], tuple[object, int]] = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]

    def decode(text: str) -> object:
        try:
            value, end = scan(text, 0)
        except StopIteration as exc:
            raise ValueError("not JSON") from exc
        if end != len(text):
            raise ValueError("not one JSON value")
        return value

    return decode


_encode = _make_encode()
_decode = _make_decode()
_TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_ANCILLARY_BYTES = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_buffers = threading.local()


def _buffer() -> bytearray:
    """This thread's receive buffer: one message, and one byte more to see a message that is too long."""
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = bytearray(MAX_MESSAGE_BYTES + 1)
        _buffers.buffer = buffer
    return buffer


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


class WireError(Exception):
    """The peer sent something that is not a well-formed message, or the socket failed."""


def close_fds(fds: list[int]) -> None:
    """Close fds received with a message that is being refused."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            continue


def send_message(sock: socket.socket, value: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send one message (and its fds).

    Raises:
        WireError: the message is too large, or the socket failed.
    """
    data = _encode(value).encode("ascii")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte bound")
    if len(fds) > MAX_FDS:
        raise WireError(f"{len(fds)} fds is over the bound of {MAX_FDS}")
    try:
        if fds:
            socket.send_fds(sock, [data], list(fds))
        else:
            sock.send(data)  # one datagram: all of it, or an error
    except OSError as exc:
        raise WireError(f"cannot send: {exc.strerror or exc}") from exc


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """Receive one message; ``None`` when the peer closed the socket.

    Received fds are returned (the caller owns them). A malformed message has
    its fds closed before :class:`WireError` is raised.

    Raises:
        WireError: the message is truncated, not a JSON object, or the socket failed.
    """
    buffer = _buffer()
    try:
        size, ancillary, flags, _ = sock.recvmsg_into([buffer], _ANCILLARY_BYTES)
    except ConnectionResetError:  # the peer is gone, with something of ours unread
        return None
    except OSError as exc:
        raise WireError(f"cannot receive: {exc.strerror or exc}") from exc
    fds = _received_fds(ancillary) if ancillary else []
    if not size and not fds:
        return None
    if flags & _TRUNCATED or size > MAX_MESSAGE_BYTES:
        close_fds(fds)
        raise WireError(f"message over the {MAX_MESSAGE_BYTES}-byte or {MAX_FDS}-fd bound")
    try:
        value = _decode(buffer[:size].decode("utf-8"))
    except ValueError as exc:  # not UTF-8, or not JSON
        close_fds(fds)
        raise WireError("message is not JSON") from exc
    except RecursionError as exc:  # "[[[[..." : a nesting bomb fits easily in one message
        close_fds(fds)
        raise WireError("message is nested too deeply") from exc
    if not isinstance(value, dict):
        close_fds(fds)
        raise WireError("message is not a JSON object")
    return value, fds
