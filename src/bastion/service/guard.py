"""Request guards applied ahead of every route: header bounds and per-client rate limits.

Example:
    >>> limiter = RateLimiter(rate_per_s=1.0, burst=2, max_clients=10)
    >>> [limiter.admit("198.51.100.7", now=0.0) for _ in range(3)]
    [0.0, 0.0, 1.0]

:func:`check_headers` bounds the count and total size of a request's headers
(431 beyond them). The HTTP server bounds the bytes it buffers before the app
sees them (:mod:`bastion.service.h11_server`); this check holds on any ASGI
server. :class:`RateLimiter` is a token bucket per client address for the
unauthenticated device endpoints, so a flood from one client cannot starve the
others (429 with ``Retry-After``). It lives in one worker process: with ``N``
workers a client may get up to ``N`` times the rate. Behind a reverse proxy
every request comes from the proxy's address, so the proxy limits per client
(the loopback address is exempt by default).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import orjson
from starlette.types import Scope, Send

from bastion.service.config import HttpLimits

__all__ = ["RateLimiter", "check_headers", "client_key", "send_error"]


def check_headers(scope: Scope, limits: HttpLimits) -> str | None:
    """Return what is wrong with the request's header section, or ``None`` when it is within bounds."""
    headers = scope.get("headers", ())
    if len(headers) > limits.max_header_count:
        return (
            f"the request has {len(headers)} headers; at most {limits.max_header_count} are accepted, "
            "send fewer headers"
        )
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    for name, value in headers:
        size += len(name) + len(value) + 4  # ": " and CRLF
    if size > limits.max_header_bytes:
        return f"the request header section is larger than {limits.max_header_bytes} bytes; send smaller headers"
    return None


def client_key(scope: Scope) -> str:
    """The address a request comes from (``"unknown"`` when the server does not say)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimiter:
    """Token buckets per client: ``burst`` requests at once, then ``rate_per_s`` per second.

    At most ``max_clients`` buckets are kept; the least recently seen client is
    forgotten first (it starts again with a full bucket, which is the
    conservative way to forget). Time is a parameter (a monotonic clock).
    """

    def __init__(self, *, rate_per_s: float, burst: int, max_clients: int) -> None:
        """A limiter with the given rate, burst and bound on tracked clients."""
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def admit(self, client: str, *, now: float) -> float:
        """Take one token for ``client``: ``0.0`` when admitted, else the seconds to wait."""
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
        if tokens >= 1.0:
            wait = 0.0
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def retry_after(self, wait: float) -> int:
        """Whole seconds for a ``Retry-After`` header (at least 1)."""
        return max(1, math.ceil(wait))


async def send_error(
    send: Send, status: int, code: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send the API's error shape ``{"error", "detail"}`` as a raw ASGI response."""
    body = orjson.dumps({"error": code, "detail": detail})
    response_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    response_headers.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
