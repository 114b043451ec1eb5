"""Wire format of the monitor API: length-prefixed deterministic CBOR frames.

A frame is a big-endian ``u32`` length followed by that many bytes of one CBOR
item (RFC 8949, deterministic encoding as in section 4.2.1). Requests are maps
``{"op": tstr, "args": map}``; responses are ``{"result": map}`` or
``{"error": tstr, "detail": tstr}``. The full reference is ``docs/monitor-api.md``.

Example:
    >>> decode_message(encode_message({"op": "read_counters", "args": {}}))
    {'args': {}, 'op': 'read_counters'}
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import cbor2

from bastion.crypto.cose import cbor_loads_exact
from bastion.crypto.errors import MalformedInput
from bastion.monitor.errors import FrameTooLargeError, MonitorProtocolError, MonitorUnavailableError

__all__ = [
    "ERR_BAD_ARGS",
    "ERR_BAD_PATH",
    "ERR_BAD_STATE",
    "ERR_FRAME_TOO_LARGE",
    "ERR_IMAGE_REFUSED",
    "ERR_INTERNAL",
    "ERR_MALFORMED",
    "ERR_UNKNOWN_OP",
    "MAX_FRAME_BYTES",
    "OP_ACK_BOOT_EVENT",
    "OP_CONFIRM_BOOT",
    "OP_FAIL_TRIAL",
    "OP_GET_CERT_CHAIN",
    "OP_INSTALL_OS",
    "OP_READ_COUNTERS",
    "OP_SIGN_ATTESTATION",
    "decode_message",
    "drain",
    "encode_message",
    "read_frame",
    "write_frame",
]

#: Bound on one frame's payload, in either direction. An EAT with a two-certificate
#: x5chain is about 2 KiB; requests are smaller still.
MAX_FRAME_BYTES = 32 * 1024
#: Size of the length prefix.
_LEN = struct.Struct(">I")
#: Chunk size used while discarding an oversized frame.
_DRAIN_CHUNK = 64 * 1024

OP_SIGN_ATTESTATION = "sign_attestation"
OP_GET_CERT_CHAIN = "get_cert_chain"
OP_READ_COUNTERS = "read_counters"
OP_INSTALL_OS = "install_os"
OP_CONFIRM_BOOT = "confirm_boot"
OP_ACK_BOOT_EVENT = "ack_boot_event"
#: The running trial OS failed its health check: roll back now, outcome ``failed`` (ADR 0018).
OP_FAIL_TRIAL = "fail_trial"

ERR_UNKNOWN_OP = "unknown_op"
ERR_MALFORMED = "malformed_request"
ERR_FRAME_TOO_LARGE = "frame_too_large"
ERR_BAD_ARGS = "bad_args"
ERR_INTERNAL = "internal_error"
ERR_BAD_STATE = "bad_state"
ERR_BAD_PATH = "bad_path"
ERR_IMAGE_REFUSED = "image_refused"


def encode_message(message: dict[str, Any]) -> bytes:
    """Encode a message as deterministic CBOR (no length prefix).

    Raises:
        MonitorProtocolError: the message cannot be encoded or exceeds MAX_FRAME_BYTES.
    """
    try:
        data: bytes = cbor2.dumps(message, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise MonitorProtocolError("message cannot be encoded as CBOR") from exc
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLargeError(len(data), MAX_FRAME_BYTES)
    return data


def decode_message(data: bytes) -> dict[str, Any]:
    """Decode one CBOR map with text keys; trailing bytes are an error.

    Raises:
        MonitorProtocolError: oversized, not CBOR, trailing data, or not a map
            with text keys.
    """
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLargeError(len(data), MAX_FRAME_BYTES)
    try:
        value = cbor_loads_exact(data)
    except MalformedInput as exc:
        raise MonitorProtocolError(f"frame is not one CBOR item ({exc})") from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MonitorProtocolError("frame is not a CBOR map with text keys")
    return value


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Read exactly ``size`` bytes; None on EOF before the first byte."""
    buf = bytearray()
    while len(buf) < size:
        try:
            chunk = sock.recv(size - len(buf))
        except OSError as exc:
            raise MonitorUnavailableError("monitor connection failed while reading") from exc
        if not chunk:
            if not buf:
                return None
            raise MonitorUnavailableError("monitor connection closed in the middle of a frame")
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> bytes | None:
    """Read one frame's payload, or None on a clean end of stream.

    Raises:
        FrameTooLargeError: the length prefix exceeds MAX_FRAME_BYTES; the payload is
            still on the wire (see :func:`drain`).
        MonitorUnavailableError: the socket failed or closed mid-frame.
    """
    header = _recv_exact(sock, _LEN.size)
    if header is None:
        return None
    (length,) = _LEN.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise FrameTooLargeError(length, MAX_FRAME_BYTES)
    if length == 0:
        return b""
    payload = _recv_exact(sock, length)
    if payload is None:
        raise MonitorUnavailableError("monitor connection closed in the middle of a frame")
    return payload


def drain(sock: socket.socket, length: int) -> None:
    """Discard ``length`` bytes of an oversized frame without buffering them.

    Raises:
        MonitorUnavailableError: the stream ended or failed before ``length`` bytes.
    """
    remaining = length
    while remaining:
        try:
            chunk = sock.recv(min(remaining, _DRAIN_CHUNK))
        except OSError as exc:
            raise MonitorUnavailableError("connection failed while discarding a frame") from exc
        if not chunk:
            raise MonitorUnavailableError("connection closed while discarding a frame")
        remaining -= len(chunk)


def write_frame(sock: socket.socket, payload: bytes) -> None:
    """Write one frame.

    Raises:
        FrameTooLargeError: ``payload`` exceeds MAX_FRAME_BYTES.
        MonitorUnavailableError: the socket failed.
    """
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameTooLargeError(len(payload), MAX_FRAME_BYTES)
    try:
        sock.sendall(_LEN.pack(len(payload)) + payload)
    except OSError as exc:
        raise MonitorUnavailableError("monitor connection failed while writing") from exc
