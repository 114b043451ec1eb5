"""The hostile app's attacks: each one tries to get out of the sandbox one way, and says how it went.

Every attack is a function ``attack(ctx) -> Outcome`` registered with
:func:`attack` under a name and a group:

- ``safe``: fails with an error the app sees (EACCES, ENOENT, EROFS, a refusal
  from the OS...), so many of them run in one app start;
- ``kill``: the seccomp filter kills the app (SIGSYS) at the first try, so each
  needs its own app start; the runner prints a ``trying`` line first;
- ``own``: needs an app start of its own for another reason (it holds
  processes or memory until stopped, floods its log, ...).

An outcome is one JSON line on stdout (the OS appends it to the app's log)::

    {"attack": "read_uds", "blocked": true, "how": "FileNotFoundError", "detail": {...}}

``blocked`` is ``true`` (refused), ``false`` (it got through: a finding) or
``null`` (only the OS can tell, e.g. whether daemons outlive the stop).
Whatever an attack managed to read is reported only as a SHA-256 (``leaked``),
never as bytes, so a test can compare it with the secrets it planted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ATTACKS", "Attack", "Context", "Outcome", "attack", "report", "sha256", "try_each"]


@dataclass(frozen=True)
class Context:
    """What the attacker knows of the host (a real attacker could guess all of it).

    Attributes:
        dev: the device directory's host path, or ``""``.
        os_pid: the OS process's host pid, or 0.
        victim: another app's component ID, or ``""``.
        port: a loopback port where the host listens (TCP and UDP), or 0.
        abstract: an abstract unix socket name the host listens on, or ``""``.
    """

    dev: str = ""
    os_pid: int = 0
    victim: str = ""
    port: int = 0
    abstract: str = ""

    def under_dev(self, *parts: str) -> list[str]:
        """``DEV/parts`` when the device directory is known (empty otherwise)."""
        return [os.path.join(self.dev, *parts)] if self.dev else []


@dataclass
class Outcome:
    """How one attack went."""

    blocked: bool | None
    how: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attack:
    """A registered attack."""

    name: str
    group: str
    run: Callable[[Context], Outcome]


ATTACKS: dict[str, Attack] = {}


def attack(name: str, group: str = "safe") -> Callable[[Callable[[Context], Outcome]], Callable[[Context], Outcome]]:
    """Register an attack."""

    def register(function: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        ATTACKS[name] = Attack(name, group, function)
        return function

    return register


def report(value: dict[str, Any]) -> None:
    """One JSON line on stdout (unbuffered: the app may be killed right after)."""
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")
    sys.stdout.flush()


def sha256(data: bytes) -> str:
    """The hash under which read bytes are reported."""
    return hashlib.sha256(data).hexdigest()


def try_each(attempts: Iterable[tuple[str, Callable[[], object]]]) -> Outcome:
    """Run attempts that must all fail; any that returns is a success of the attacker.

    An attempt that returns bytes has them reported as ``leaked`` hashes.
    """
    errors: dict[str, str] = {}
    succeeded: list[str] = []
    leaked: list[str] = []
    for label, attempt in attempts:
        try:
            value = attempt()
        except Exception as exc:  # noqa: BLE001 - every refusal is the expected result
            errors[label] = type(exc).__name__
            continue
        succeeded.append(label)
        if isinstance(value, bytes):
            leaked.append(sha256(value))
    detail: dict[str, Any] = {"errors": errors}
    if succeeded:
        detail["succeeded"] = succeeded
    if leaked:
        detail["leaked"] = leaked
    how = ",".join(sorted(set(errors.values()))) if not succeeded else "got through: " + ",".join(succeeded)
    return Outcome(not succeeded, how, detail)


def read_file(path: str, limit: int = 4096) -> bytes:
    """Open and read a file (the attempt most attacks make)."""
    with open(path, "rb") as handle:  # noqa: PTH123 - plain stdlib, the attacker's way
        return handle.read(limit)


def write_file(path: str, data: bytes = b"pwned") -> int:
    """Open a file for writing, without truncating or creating it."""
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
