"""uvicorn's HTTP protocols, with the request header section bounded while it is read.

``bastion service run`` serves with :class:`BoundedHttpToolsProtocol` (the
default, uvicorn's fastest parser) or with h11 and
``h11_max_incomplete_event_size`` (``--http h11``), both bounded by
:attr:`bastion.service.config.HttpLimits.max_header_bytes`.

httptools (llhttp) has no bound of its own: it buffers a header section of
any size before the app sees it, so a 32 MiB header would cost 32 MiB per
connection. :class:`BoundedHttpToolsProtocol` counts the bytes of the header
section as they arrive; once they pass the bound and the headers are still not
complete it answers ``431`` in the API's error shape and closes the
connection. It holds at most the bound plus one socket read. The app checks
the parsed headers again (count and size, :func:`bastion.service.guard.check_headers`),
which holds under any server.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bastion.service.config import HttpLimits

__all__ = ["MAX_HEADER_BYTES", "BoundedHttpToolsProtocol", "header_too_large_response"]

#: The bound on one request's header section, in bytes (:class:`HttpLimits`).
MAX_HEADER_BYTES = HttpLimits().max_header_bytes


def _closing_error_response(status_line: bytes, error: str, detail: str) -> bytes:
    """A raw HTTP/1.1 error response that closes the connection, in the API's ``{"error", "detail"}`` shape."""
    body = orjson.dumps({"error": error, "detail": detail})
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (
        status_line,
        len(body),
    )
    return head + body


def header_too_large_response(limit: int) -> bytes:
    """The raw HTTP/1.1 ``431`` response, in the API's ``{"error", "detail"}`` shape."""
    return _closing_error_response(
        b"431 Request Header Fields Too Large",
        "headers_too_large",
        f"the request header section is larger than {limit} bytes; send smaller headers",
    )


#: What a request the parser cannot read gets (uvicorn's own answer is ``text/plain``).
_INVALID_HTTP_RESPONSE = _closing_error_response(
    b"400 Bad Request",
    "invalid_request",
    "the request is not valid HTTP/1.1 (framing, Content-Length or header syntax); fix the client",
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that refuses a header section over :data:`MAX_HEADER_BYTES`."""

    max_header_bytes = MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As uvicorn's protocol; the header count starts at zero."""
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._headers_done = False
        self._refused = False

    def data_received(self, data: bytes) -> None:
        """Feed the parser, counting header bytes; refuse once the section passes the bound."""
        if self._refused:
            return
        if not self._headers_done:
            self._header_bytes += len(data)
        super().data_received(data)
        if not self._headers_done and self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refused = True
            self.transport.write(header_too_large_response(self.max_header_bytes))
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused in the API's error shape, then close (uvicorn's is text/plain)."""
        del msg  # uvicorn's text; it is logged by the caller
        self.transport.write(_INVALID_HTTP_RESPONSE)
        self.transport.close()

    def on_headers_complete(self) -> None:
        """The section is complete: what follows is the body."""
        self._headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is complete: the next bytes start the next request's header section."""
        self._headers_done = False
        self._header_bytes = 0
        super().on_message_complete()
