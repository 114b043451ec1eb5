"""Serve one app's applibs socket: every request goes through :func:`dispatch`.

:func:`dispatch` is the choke point. In order it refuses:

1. an op that is not in the table (``no such operation``);
2. an op a real-time app may not call;
3. an op whose manifest capability the app lacks;
4. a request carrying more fds than the op takes.

Then the handler runs; its own finer refusals are :class:`DeniedError` too. Each
refusal is recorded through ``ctx.record("app_denied", ...)`` (the security
event that failure reporting collects) and answered with an error that names
the capability; an :class:`AppServer` records each distinct refusal of an app
start once, up to a bound (:mod:`bastion.os.appservices.denials`), so a flood
cannot push older events out of the queue. A handler bug answers ``failed``
and is logged; internals never reach the app.

Example::

    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = AppServer(ctx, os_end)
    server.start()                 # one thread per app
    ... pass app_end into the sandbox ...
    server.close()
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import Mapping
from typing import Any

from bastion.applibs._wire import WireError, close_fds, recv_message, send_message
from bastion.os.appservices.denials import DENIED_EVENT, DenialBudget
from bastion.os.appservices.registry import (
    AppContext,
    BadRequestError,
    DeniedError,
    Operation,
    OpError,
    Reply,
    has_capability,
)

__all__ = ["DENIED_EVENT", "FDS_ARG", "AppServer", "dispatch"]

#: The key under which a handler finds the fds its request carried.
FDS_ARG = "_fds"
#: Bound on the op name echoed into an event.
_MAX_OP_CHARS = 64

_log = logging.getLogger("bastion.os.appservices")


def _refuse(ctx: AppContext, op: str, error: DeniedError) -> DeniedError:
    what = f"{op[:_MAX_OP_CHARS]}: {error}"
    if error.capability:
        what = f"{error.capability}: {what}"
    ctx.record(DENIED_EVENT, what)
    _log.warning("app %s denied: %s", ctx.component_id, what)
    return error


def _check(ctx: AppContext, op: object, table: Mapping[str, Operation], fds: list[int]) -> Operation:
    if not isinstance(op, str) or op not in table:
        name = op if isinstance(op, str) else repr(op)
        raise _refuse(ctx, str(name), DeniedError("no such operation"))
    operation = table[op]
    if ctx.realtime and not operation.realtime:
        raise _refuse(ctx, op, DeniedError("a real-time app may use only its peripherals and inter-core messages"))
    if operation.capability is not None and not has_capability(ctx.capabilities, operation.capability):
        raise _refuse(
            ctx,
            op,
            DeniedError(f"the app manifest does not grant {operation.capability}", capability=operation.capability),
        )
    if len(fds) > operation.takes_fds:
        raise BadRequestError(f"{op} takes at most {operation.takes_fds} fds")
    return operation


def dispatch(ctx: AppContext, message: dict[str, Any], fds: list[int], table: Mapping[str, Operation]) -> Reply:
    """Check one request against the table and the manifest, then run its handler.

    The request's fds are closed here unless the handler took them (it must pop
    them from ``args[FDS_ARG]``).

    Raises:
        OpError: the request is refused or failed (refusals already recorded).
    """
    try:
        op = message.get("op")
        operation = _check(ctx, op, table, fds)
        args = message.get("args", {})
        if not isinstance(args, dict):
            raise BadRequestError("args must be an object")
        if FDS_ARG in args:  # only the OS puts fds there
            args = {k: v for k, v in args.items() if k != FDS_ARG}
        if operation.takes_fds:
            args[FDS_ARG] = fds
        try:
            return operation.handler(ctx, args)
        except DeniedError as exc:
            raise _refuse(ctx, operation.name, exc) from None
    finally:
        close_fds(fds)


def _request_id(value: object) -> int | None:
    """The id to echo: an integer only (a 100 KiB string id would make every answer too large to send)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error(request_id: object, exc: OpError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    if exc.capability is not None:
        error["capability"] = exc.capability
    return {"id": request_id, "ok": False, "error": error}


class AppServer:
    """Answers one app's requests on its socket, in a thread of its own.

    Args:
        ctx: the app.
        sock: the OS end of the app's SOCK_SEQPACKET socketpair.
        table: the operations (defaults to :data:`bastion.os.appservices.table.OPERATIONS`).

    The app's refusals are recorded through a :class:`DenialBudget` (each distinct one once,
    bounded), so a flood of refused requests cannot flush the event queue.
    """

    def __init__(self, ctx: AppContext, sock: socket.socket, table: Mapping[str, Operation] | None = None) -> None:
        if table is None:
            from bastion.os.appservices.table import OPERATIONS

            table = OPERATIONS
        self.denials = DenialBudget(ctx.record)
        self.ctx = dataclasses.replace(ctx, record=self.denials.record)
        self._sock = sock
        self._table = table
        self._thread = threading.Thread(target=self._serve, name=f"applibs-{ctx.component_id[:8]}", daemon=True)
        self.requests = 0
        self._closing = False

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                message = recv_message(self._sock)
            except WireError as exc:
                if self._closing:
                    return  # close() took the socket away while this thread waited on it
                _log.warning("app %s sent a bad applibs message: %s", self.ctx.component_id, exc)
                if not self._answer({"id": None, "ok": False, "error": {"code": "bad_request", "message": str(exc)}}):
                    return
                continue
            if message is None:
                return
            value, fds = message
            self.requests += 1
            request_id = _request_id(value.get("id"))
            try:
                reply = dispatch(self.ctx, value, fds, self._table)
            except OpError as exc:
                if not self._answer(_error(request_id, exc)):
                    return
                continue
            except Exception:  # noqa: BLE001 - a handler bug: answer, log, keep serving
                _log.exception("applibs op %r of app %s failed", value.get("op"), self.ctx.component_id)
                if not self._answer(
                    {"id": request_id, "ok": False, "error": {"code": "failed", "message": "the OS failed the request"}}
                ):
                    return
                continue
            try:
                ok = self._answer({"id": request_id, "ok": True, "result": reply.result}, reply.fds)
            finally:
                close_fds(reply.fds)
            if not ok:
                return

    def _answer(self, value: dict[str, Any], fds: list[int] | None = None) -> bool:
        try:
            send_message(self._sock, value, fds or [])
        except WireError as exc:
            _log.info("app %s applibs socket closed: %s", self.ctx.component_id, exc)
            return False
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving: shut the socket down and wait for the thread."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.denials.close()
