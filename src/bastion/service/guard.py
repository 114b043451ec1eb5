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

import logging
import math
from collections import Counter, OrderedDict

import orjson
from starlette.types import Scope, Send

from bastion.service.config import HttpLimits

__all__ = ["REFUSAL_LOG_INTERVAL_S", "RateLimiter", "RefusalLog", "check_headers", "client_key", "send_error"]

_log = logging.getLogger("bastion.service.guard")

#: At most one log line per kind of refusal per this many seconds (per worker).
REFUSAL_LOG_INTERVAL_S = 60.0


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


class RefusalLog:
    """The record of refusals the guards make, kept without letting a flood write a record per request.

    Each refusal is counted by kind (``headers_too_large``, ``rate_limited``)
    and by client; at most once per ``interval_s`` per kind, a warning names
    the count since the last line and the busiest clients. Nothing goes to a
    tenant's audit view: the requests carry no identity, and an outsider must
    not be able to write there. Memory is bounded by ``max_clients`` per kind.
    """

    def __init__(self, *, interval_s: float = REFUSAL_LOG_INTERVAL_S, max_clients: int = 1024) -> None:
        """A log that writes a line per kind at most every ``interval_s``."""
        self.interval_s = interval_s
        self.max_clients = max_clients
        self.totals: Counter[str] = Counter()
        self._pending: dict[str, Counter[str]] = {}
        self._last_line: dict[str, float] = {}

    def note(self, kind: str, client: str, *, now: float) -> None:
        """Count one refusal; write the summary line when the interval for ``kind`` has passed."""
        self.totals[kind] += 1
        pending = self._pending.setdefault(kind, Counter())
        if client in pending or len(pending) < self.max_clients:
            pending[client] += 1
        else:
            pending["(other clients)"] += 1
        last = self._last_line.get(kind)
        if last is None or now - last >= self.interval_s:
            self._last_line[kind] = now
            busiest = ", ".join(f"{c} x{n}" for c, n in pending.most_common(3))
            _log.warning("refused %d request(s) as %s; busiest clients: %s", sum(pending.values()), kind, busiest)
            pending.clear()


async def send_error(
    send: Send, status: int, code: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send the API's error shape ``{"error", "detail"}`` as a raw ASGI response."""
    body = orjson.dumps({"error": code, "detail": detail})
    response_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    response_headers.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
