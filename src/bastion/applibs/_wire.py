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

import json
import os
import socket
from typing import Any

__all__ = ["MAX_FDS", "MAX_MESSAGE_BYTES", "WireError", "close_fds", "recv_message", "send_message"]

#: Bound on one message (request or reply), in bytes.
MAX_MESSAGE_BYTES = 128 * 1024  # below the default socket buffer (wmem_default), so any message fits one datagram
#: Bound on the fds one message carries.
MAX_FDS = 4


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
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte bound")
    if len(fds) > MAX_FDS:
        raise WireError(f"{len(fds)} fds is over the bound of {MAX_FDS}")
    try:
        if fds:
            socket.send_fds(sock, [data], list(fds))
        else:
            sock.sendall(data)
    except OSError as exc:
        raise WireError(f"cannot send: {exc.strerror or exc}") from exc


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """Receive one message; ``None`` when the peer closed the socket.

    Received fds are returned (the caller owns them). A malformed message has
    its fds closed before :class:`WireError` is raised.

    Raises:
        WireError: the message is truncated, not a JSON object, or the socket failed.
    """
    try:
        data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE_BYTES + 1, MAX_FDS)
    except OSError as exc:
        raise WireError(f"cannot receive: {exc.strerror or exc}") from exc
    if not data and not fds:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_MESSAGE_BYTES:
        close_fds(fds)
        raise WireError(f"message over the {MAX_MESSAGE_BYTES}-byte or {MAX_FDS}-fd bound")
    try:
        value = json.loads(data)
    except ValueError as exc:
        close_fds(fds)
        raise WireError("message is not JSON") from exc
    except RecursionError as exc:  # "[[[[..." : a nesting bomb fits easily in one message
        close_fds(fds)
        raise WireError("message is nested too deeply") from exc
    if not isinstance(value, dict):
        close_fds(fds)
        raise WireError("message is not a JSON object")
    return value, fds
