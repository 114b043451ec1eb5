"""Web-layer plumbing shared by every slice: dependencies, error bodies, body bounds.

Endpoints declare what they need with ``Annotated`` dependencies::

    @router.get("/things")
    def list_things(session: SessionDep, now: NowDep, who: ReaderDep) -> ...

The session, settings and clock live on ``app.state`` (set by
:func:`bastion.service.app.create_app`); nothing here is global.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.service.config import Settings

__all__ = [
    "MAX_LIST_OFFSET",
    "BodyLimitMiddleware",
    "Clock",
    "LimitQuery",
    "NowDep",
    "OffsetQuery",
    "SessionDep",
    "SettingsDep",
    "error_response",
    "get_now",
    "get_session",
    "get_settings",
    "utc_now",
]

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The real clock (timezone-aware UTC)."""
    return dt.datetime.now(dt.UTC)


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) afterwards."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        yield session


async def get_settings(request: Request) -> Settings:
    """The app's settings (``async``: no I/O, so FastAPI runs it on the loop, not in a thread)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_now(request: Request) -> dt.datetime:
    """The current time from the app's clock (a parameter, so tests need not patch time; no I/O, so ``async``)."""
    clock: Clock = request.app.state.clock
    return clock()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
NowDep = Annotated[dt.datetime, Depends(get_now)]

#: Bound on the ``offset`` of a list request: far beyond any real list, far below SQL's 2**63.
MAX_LIST_OFFSET = 10**9
#: ``?offset=N`` of a list endpoint (rows to skip).
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET, description="rows to skip")]
#: ``?limit=N`` of a list endpoint (rows per page; the endpoint caps it at its maximum page).
LimitQuery = Annotated[int | None, Query(ge=1, le=MAX_LIST_OFFSET, description="rows per page")]


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body shape of the API: ``{"error": code, "detail": detail}``."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """Reject request bodies larger than a bound with 413, before the app buffers them.

    Paths under ``streaming_prefixes`` are skipped: their endpoints stream the
    body and apply their own (larger) bound.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, streaming_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.streaming_prefixes = streaming_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.streaming_prefixes):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The HTTP server holds the body to its declared length; checking it suffices.
                if not value.isdigit() or int(value) > limit:
                    await self._reject(scope, receive, send)
                    return
                await self.app(scope, receive, send)
                return
        # No declared length (chunked): buffer up to the bound, then replay.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await self._reject(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"request body is larger than the limit of {self.max_body_bytes} bytes",
        )
        await response(scope, receive, send)
