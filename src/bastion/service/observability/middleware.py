"""Per request: the request id, the access log line and the request metrics.

:class:`Observer` wraps the whole ASGI app (the guards, the fast paths, FastAPI),
so every answer, a 431 or a 429 included, gets an ``X-Request-ID`` header, one
access line and its count. The id is the client's ``X-Request-ID`` when that is
:data:`MAX_REQUEST_ID_CHARS` or fewer of ``[A-Za-z0-9._:-]`` (a load balancer's
id then ties its log to ours), else 16 random bytes in hex. Log lines written
while the request is served carry it (:data:`bastion.jsonlog.REQUEST_ID`).

The access line (logger ``bastion.access``) holds the method, the route
*template*, the status, the duration and the id: never the raw path or the
query string (either may carry a device id or a credential), never a header.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.jsonlog import REQUEST_ID
from bastion.service import metrics
from bastion.service.observability.accesslog import AccessLogHandler, access_line
from bastion.service.observability.logconfig import ACCESS_LOGGER

__all__ = ["ACCESS_LOGGER", "MAX_REQUEST_ID_CHARS", "REQUEST_ID_HEADER", "Observer", "route_label"]

#: Bound on an accepted incoming request id.
MAX_REQUEST_ID_CHARS = 64
#: The header carrying the request id, both ways.
REQUEST_ID_HEADER = b"x-request-id"

#: The API's prefix (``bastion.service.app.API_PREFIX``, which imports this module).
API_PREFIX = "/api/v1"

_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_REQUEST_ID_CHARS)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TUF_PREFIX = "/tuf/"
_TIMESTAMP = "/metadata/timestamp.json"
#: Route templates whose success is a device check-in, and its kind.
_CHECKIN_ROUTES = {"/tuf/{group}/metadata/timestamp.json": "tuf_timestamp", "/api/v1/device/status": "status_report"}

_access = logging.getLogger(ACCESS_LOGGER)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            if _REQUEST_ID_RE.fullmatch(value):
                return bytes(value).decode("ascii")
            break
    return secrets.token_hex(16)


def route_label(scope: Scope, exact_paths: Collection[str] = (), api_prefix: str = API_PREFIX) -> str:
    """The route template that served ``scope`` (bounded: never the raw path)."""
    path = scope.get("path", "")
    path_format = getattr(scope.get("route"), "path_format", None)
    if isinstance(path_format, str):
        # An included router's route knows its template below the prefix it was mounted at.
        if path.startswith(api_prefix + "/") and not path_format.startswith(api_prefix + "/"):
            return api_prefix + path_format
        return path_format
    if path in exact_paths:
        return str(path)
    if not path.startswith(_TUF_PREFIX):
        return "unmatched"
    if path.endswith(_TIMESTAMP):
        return "/tuf/{group}/metadata/timestamp.json"
    return "/tuf/{group}/metadata/{name}" if "/metadata/" in path else "/tuf/{group}/targets/{path}"


class Observer:
    """Wraps one HTTP request: request id in and out, metrics, one access line."""

    def __init__(self, exact_paths: Collection[str] = (), clock: Callable[[], float] = time.perf_counter) -> None:
        """Args: exact_paths: paths served outside the router (the fast paths), labelled as themselves."""
        self._exact = frozenset(exact_paths)
        self._clock = clock

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, app: Callable[[Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        """Serve the request through ``app``, then count it and log it."""
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # an exception before the response started
        start = self._clock()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            elapsed = self._clock() - start
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            route = route_label(scope, self._exact)
            requests, seconds, checkins = _children(route, method, status)
            requests.inc()
            seconds.observe(elapsed)
            if checkins is not None:
                checkins.inc()
            if _access.isEnabledFor(logging.INFO):
                ms = round(elapsed * 1000, 3)
                sink = _fast_sink()
                if sink is not None:
                    sink.write_line(
                        access_line(method, route, status, ms, request_id, now=time.time(), process=sink.process)
                    )
                else:  # another handler (a test's, an operator's dictConfig): the ordinary record
                    extra: dict[str, Any] = {"method": method, "route": route, "status": status, "ms": ms}
                    _access.info("%s %s %d", method, route, status, extra=extra)
            REQUEST_ID.reset(token)


#: ``(route, method, status)`` -> the metric children it counts in (labels are bounded; so is this).
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
_MAX_CHILDREN = 4096


def _children(route: str, method: str, status: int) -> tuple[Any, Any, Any]:
    """The request counter, latency histogram and check-in counter children (``labels()`` once per key)."""
    key = (route, method, status)
    found = _CHILDREN.get(key)
    if found is None:
        kind = _CHECKIN_ROUTES.get(route)
        found = (
            metrics.HTTP_REQUESTS.labels(route, method, str(status)),
            metrics.HTTP_REQUEST_SECONDS.labels(route, method),
            metrics.CHECKINS.labels(kind) if kind is not None and status < 400 else None,
        )
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[key] = found
    return found


def _fast_sink() -> AccessLogHandler | None:
    """The access logger's one handler when it is ours and nothing else would see the record, else None."""
    handlers = _access.handlers
    if len(handlers) != 1 or _access.propagate or _access.filters:
        return None
    handler = handlers[0]
    if type(handler) is not AccessLogHandler or handler.filters or handler.level > logging.INFO:
        return None
    return handler


def wrap(app: ASGIApp) -> ASGIApp:  # pragma: no cover - convenience for other ASGI apps
    """``app`` behind an :class:`Observer` (for apps other than :class:`~bastion.service.app.ServiceApp`)."""
    observer = Observer()

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        await observer(scope, receive, send, app)

    return observed
