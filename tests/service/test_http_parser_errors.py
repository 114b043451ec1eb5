"""The HTTP server's own parser errors answer in the API's error shape (issue 7, section 6; red team).

A request that httptools cannot parse (``Content-Length`` together with
``Transfer-Encoding``, a ``Content-Length`` too large to be a number, bad
framing) never reaches the app: uvicorn answered it ``400`` with a
``text/plain`` body, "Invalid HTTP request received.", outside the documented
``{"error", "detail"}`` shape.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from bastion.service.http_server import BoundedHttpToolsProtocol


class _Transport(asyncio.Transport):
    """Collects what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 9) if name in {"peername", "sockname"} else default


async def _app(scope: object, receive: object, send: object) -> None:
    """Never reached: the parser refuses first."""
    raise AssertionError(scope)


def _answer(request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    async def run() -> bytes:
        config = Config(app=_app, http=BoundedHttpToolsProtocol)
        config.load()
        protocol = BoundedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        if protocol.timeout_keep_alive_task is not None:
            protocol.timeout_keep_alive_task.cancel()
        assert transport.closed
        return transport.written

    raw = asyncio.run(run())
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/v1/attestation HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /api/v1/devices/claim HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    ],
    ids=["content-length-and-chunked", "content-length-overflow", "header-without-colon"],
)
def test_a_request_the_parser_refuses_is_400_in_the_error_shape(request_bytes: bytes) -> None:
    status, headers, body = _answer(request_bytes)
    assert status.startswith(b"HTTP/1.1 400")
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    answer = orjson.loads(body)
    assert set(answer) == {"error", "detail"}
    assert answer["error"] == "invalid_request"
