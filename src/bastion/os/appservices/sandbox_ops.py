"""The OS side of ``sandbox.hello``: the in-sandbox launcher reports the layers it applied.

The launcher (:mod:`bastion.os.sandbox._shim`) sends it once, as the first
message on the app's socket, before any app code runs. It is accepted once and
only as the first request; a later hello, a hello after another request, or a
hello from an app the OS started without a sandbox is refused (``app_denied``),
so an app cannot rewrite the record of its own confinement.

Each app start has its own :class:`SandboxSession` among the context's services.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from bastion.os.appservices.registry import AppContext, Args, BadRequestError, DeniedError, Operation, Reply

__all__ = ["HELLO_OP", "OPERATIONS", "SandboxSession"]

HELLO_OP = "sandbox.hello"
#: Bounds on what a hello may carry.
_MAX_TEXT = 200
_MAX_SCOPES = 8
_MAX_INT = 2**63 - 1
_RLIMIT_NAMES = ("nproc", "as", "nofile", "fsize", "core")


class SandboxSession:
    """The layers of one running app: what the OS set up, then what its launcher confirmed.

    Args:
        layers: the OS's record (``SandboxPolicy.to_json()`` plus the sandbox kind).
        expect_hello: whether a launcher runs in front of the app (not under ``--insecure-no-sandbox``).
    """

    def __init__(self, layers: dict[str, Any], *, expect_hello: bool) -> None:
        self._layers = dict(layers)
        self._expect = expect_hello
        self._lock = threading.Lock()
        self.hello: dict[str, Any] | None = None
        #: The number of requests the app's server has received (set by whoever runs the server).
        self.request_count: Callable[[], int] = lambda: 1
        if expect_hello:
            self._layers.setdefault("landlock", "pending")
            self._layers["confirmed"] = False

    def accept(self, hello: dict[str, Any]) -> None:
        """Record the launcher's report.

        Raises:
            DeniedError: not expected, already received, or not the first request.
        """
        with self._lock:
            if not self._expect:
                raise DeniedError("this app runs without a sandbox launcher")
            if self.hello is not None:
                raise DeniedError("the sandbox already said hello")
            if self.request_count() != 1:
                raise DeniedError("sandbox.hello must be the first request")
            self.hello = hello
            landlock = hello["landlock"]
            self._layers["landlock"] = landlock if landlock.get("abi") else f"unavailable: {landlock['unavailable']}"
            self._layers["seccomp_filters"] = hello["seccomp_filters"]
            self._layers["rlimits"] = hello["rlimits"]
            self._layers["confirmed"] = True

    def layers(self) -> dict[str, Any]:
        """A copy of the current record."""
        with self._lock:
            return copy.deepcopy(self._layers)


def _int(value: object, name: str, high: int = _MAX_INT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value <= high:
        raise BadRequestError(f"hello field {name!r} must be an integer")
    return value


def _landlock(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError("hello field 'landlock' must be an object")
    abi = _int(value.get("abi"), "landlock.abi", 255)
    if abi <= 0:
        reason = value.get("unavailable")
        if not isinstance(reason, str):
            raise BadRequestError("hello field 'landlock.unavailable' must be a string")
        return {"abi": 0, "unavailable": reason[:_MAX_TEXT]}
    scoped = value.get("scoped", [])
    if not isinstance(scoped, list) or len(scoped) > _MAX_SCOPES or not all(isinstance(s, str) for s in scoped):
        raise BadRequestError("hello field 'landlock.scoped' must be a short list of names")
    return {"abi": abi, "fs": value.get("fs") is True, "net": value.get("net") is True, "scoped": scoped}


def _hello(ctx: AppContext, args: Args) -> Reply:
    session = ctx.service(SandboxSession)
    rlimits = args.get("rlimits")
    if not isinstance(rlimits, dict) or set(rlimits) - set(_RLIMIT_NAMES):
        raise BadRequestError("hello field 'rlimits' must map rlimit names to integers")
    hello = {
        "landlock": _landlock(args.get("landlock")),
        "rlimits": {name: _int(v, f"rlimits.{name}") for name, v in rlimits.items()},
        "seccomp_filters": _int(args.get("seccomp_filters"), "seccomp_filters", 64),
        "no_new_privs": args.get("no_new_privs") is True,
        "capabilities": _int(args.get("capabilities"), "capabilities"),
        "uid": _int(args.get("uid"), "uid"),
    }
    session.accept(hello)
    return Reply({"accepted": True})


OPERATIONS = (Operation(HELLO_OP, _hello, capability=None, realtime=True),)
