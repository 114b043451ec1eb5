"""Attacks on the OS through its one door, the applibs socket (fd 3).

Every request goes through the OS's choke point: an unknown op, an op whose
capability the manifest does not grant, a second ``sandbox.hello``, too many
fds, a malformed or oversized message are each refused, the refusals recorded
as ``app_denied`` events, and the server keeps answering. The raw attacks
write to fd 3 directly, bypassing the library's own checks.
"""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attacks import Context, Outcome, attack, try_each
from bastion.applibs import PermissionDeniedError, RequestError, connection

__all__: list[str] = []

#: Ops of the device that need a capability, by the capability (used when the test does not ship ops.json).
KNOWN_OPS = {
    "storage.write": "MutableStorage",
    "net.connect": "AllowedConnections",
    "net.tls_connect": "DeviceAuthentication",
    "gpio.open": "Gpio",
    "uart.open": "Uart",
    "power.restart": "PowerControls",
    "time.set": "SystemTime",
    "certstore.install": "CertStore",
    "update.defer": "SoftwareUpdateDeferral",
}
#: The table's capability ops, written beside the app by a test (``{"op": "Capability"}``).
OPS_FILE = Path(__file__).resolve().parent.parent / "ops.json"
_TIMEOUT_S = 5.0


def capability_ops() -> dict[str, str]:
    """The ops to try without their capability."""
    try:
        value = json.loads(OPS_FILE.read_text())
    except (OSError, ValueError):
        return dict(KNOWN_OPS)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else dict(KNOWN_OPS)


@attack("applibs_unknown_op")
def applibs_unknown_op(ctx: Context) -> Outcome:
    """Ops the table does not have: the chip's, the monitor's, an empty or huge name."""
    del ctx
    names = ["chip.read_uds", "monitor.sign", "os.exec", "", "x" * 2000, "app.ping\u0000", "sandbox.hello "]
    return try_each([(f"call {n[:30]!r}", lambda n=n: connection().call(n, {})) for n in names])


@attack("applibs_no_capability")
def applibs_no_capability(ctx: Context) -> Outcome:
    """Every capability op of the device, called by an app whose manifest does not grant it."""
    del ctx
    named: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    succeeded: list[str] = []
    for op in capability_ops():
        try:
            connection().call(op, {})
        except PermissionDeniedError as exc:
            named[op] = exc.capability
            errors[op] = type(exc).__name__
        except RequestError as exc:
            errors[op] = type(exc).__name__
        else:
            succeeded.append(op)
    blocked = not succeeded and all(e == "PermissionDeniedError" for e in errors.values())
    detail: dict[str, Any] = {"named": named, "errors": errors, "succeeded": succeeded}
    return Outcome(blocked, ",".join(sorted(set(errors.values()))), detail)


def _raw() -> socket.socket:
    # A dup shares the file description with fd 3: no settimeout here, which would make the
    # library's own socket non-blocking too. Answers are awaited with select instead.
    return socket.socket(fileno=os.dup(3))


def _answer(sock: socket.socket) -> dict[str, Any]:
    ready, _, _ = select.select([sock], [], [], _TIMEOUT_S)
    if not ready:
        raise TimeoutError("the OS did not answer")
    data, fds, _, _ = socket.recv_fds(sock, 256 * 1024, 8)
    for fd in fds:
        os.close(fd)
    value = json.loads(data)
    if not isinstance(value, dict):
        raise TypeError("the OS answered something that is not an object")
    return value


def _refuse_or_accept(sock: socket.socket) -> str:
    """Read one answer: raise PermissionError with the code if the OS refused; "accepted" if not."""
    value = _answer(sock)
    if value.get("ok") is False:
        raise PermissionError(str(value.get("error", {}).get("code")))
    return "accepted"


def _alive() -> bool:
    with _raw() as sock:
        sock.send(b'{"id": -7, "op": "app.ping", "args": {"echo": "still there"}}')
        try:
            return _answer(sock).get("result", {}).get("echo") == "still there"
        except (OSError, ValueError):
            return False


def _raw_attempts(messages: list[tuple[str, bytes]]) -> list[tuple[str, Callable[[], object]]]:
    attempts: list[tuple[str, Callable[[], object]]] = []
    for label, data in messages:

        def send(data: bytes = data) -> object:
            with _raw() as sock:
                sock.send(data)
                return _refuse_or_accept(sock)

        attempts.append((label, send))
    return attempts


def _outcome_with_liveness(attempts: list[tuple[str, Callable[[], object]]]) -> Outcome:
    outcome = try_each(attempts)
    alive = _alive()
    outcome.detail["server_alive"] = alive
    if not alive:
        outcome.blocked = False
        outcome.how = "the OS's server for this app stopped answering"
    return outcome


@attack("applibs_oversized")
def applibs_oversized(ctx: Context) -> Outcome:
    """Messages past the 128 KiB bound: just past it, and far past any socket buffer."""
    del ctx

    def far_past() -> object:
        with _raw() as sock:
            sock.send(b"{" + b" " * (4 * 1024 * 1024) + b"}")  # EMSGSIZE here, or the OS refuses it
            return _refuse_or_accept(sock)

    attempts = _raw_attempts([("just past the bound", b'{"op": "app.ping", "pad": "' + b"x" * 140_000 + b'"}')])
    return _outcome_with_liveness([*attempts, ("far past the bound", far_past)])


@attack("applibs_fd_smuggling")
def applibs_fd_smuggling(ctx: Context) -> Outcome:
    """Push fds into the OS: to an op that takes none, more than any message may carry, its own socket."""
    del ctx
    directory = os.open("/app", os.O_RDONLY | os.O_DIRECTORY)
    read_end, write_end = os.pipe()
    try:

        def many() -> object:
            with _raw() as sock:
                socket.send_fds(sock, [b'{"id": -1, "op": "app.ping", "args": {}}'], [read_end] * 32)
                return _refuse_or_accept(sock)

        attempts: list[tuple[str, Callable[[], object]]] = [
            ("a dir fd to app.ping", lambda: connection().call("app.ping", {}, (directory,))),
            ("its own socket to app.ping", lambda: connection().call("app.ping", {}, (3,))),
            ("32 fds", many),
            ("fds with a forged hello", lambda: connection().call("sandbox.hello", {}, (directory, write_end))),
        ]
        return _outcome_with_liveness(attempts)
    finally:
        for fd in (directory, read_end, write_end):
            os.close(fd)


@attack("applibs_malformed")
def applibs_malformed(ctx: Context) -> Outcome:
    """Bytes that are not a request: not JSON, not an object, wrong types, a nesting bomb, a huge id."""
    del ctx
    messages = [
        ("not JSON", b"{not json"),
        ("not UTF-8", b"\xff\xfe{}"),
        ("a list", b"[]"),
        ("a string", b'"app.ping"'),
        ("op not a string", b'{"id": 1, "op": 5}'),
        ("args a list", b'{"id": 1, "op": "app.ping", "args": []}'),
        ("a huge integer", b'{"id": ' + b"9" * 5000 + b', "op": "app.ping"}'),
        ("a nesting bomb", b"[" * 100_000),
        ("a huge id", b'{"id": "' + b"i" * 120_000 + b'", "op": "no.such"}'),
    ]
    return _outcome_with_liveness(_raw_attempts(messages))
