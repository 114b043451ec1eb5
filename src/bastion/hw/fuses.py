"""The fuse bank: one-time-programmable state of the chip, persisted as JSON.

Fuses only ever move one way:

* ``lifecycle``: BLANK -> MANUFACTURED -> SECURED, never backwards;
* ``boot_key_hash``: SHA-256 of the vendor boot-signing public key, write-once;
* ``debug_locked``: can be burned to True, never cleared;
* anti-rollback counters by name (e.g. ``"os"``): burning a lower value is refused.

Every write is a locked read-modify-write followed by an atomic replace of
``fuses.json``, so a power cut leaves either the old or the new state.

Example:
    >>> import tempfile, pathlib
    >>> bank = FuseBank.create(pathlib.Path(tempfile.mkdtemp()) / "fuses.json")
    >>> bank.burn_counter("os", 2); bank.counter("os")
    2
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bastion.hw._statefile import locked, read_json, write_json
from bastion.hw.errors import CounterRollbackError, FuseWriteError, StateCorruptError

__all__ = ["BOOT_KEY_HASH_SIZE", "MAX_COUNTERS", "MAX_COUNTER_VALUE", "FuseBank", "FuseState", "Lifecycle"]

BOOT_KEY_HASH_SIZE = 32
#: The bank has room for this many named counters.
MAX_COUNTERS = 16
#: Counters are 32-bit fuse rows.
MAX_COUNTER_VALUE = 2**32 - 1
_COUNTER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class Lifecycle(enum.StrEnum):
    """Lifecycle state of the chip, in the only order it may advance."""

    BLANK = "blank"
    MANUFACTURED = "manufactured"
    SECURED = "secured"


_ORDER = {Lifecycle.BLANK: 0, Lifecycle.MANUFACTURED: 1, Lifecycle.SECURED: 2}


@dataclass(frozen=True)
class FuseState:
    """A snapshot of every fuse."""

    lifecycle: Lifecycle = Lifecycle.BLANK
    boot_key_hash: bytes | None = None
    debug_locked: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored in ``fuses.json``."""
        return {
            "lifecycle": self.lifecycle.value,
            "boot_key_hash": None if self.boot_key_hash is None else self.boot_key_hash.hex(),
            "debug_locked": self.debug_locked,
            "counters": dict(sorted(self.counters.items())),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> FuseState:
        """Parse the JSON form, strictly.

        Raises:
            StateCorruptError: a field is missing or has the wrong type.
        """
        try:
            lifecycle = Lifecycle(value["lifecycle"])
            raw_hash = value["boot_key_hash"]
            boot_key_hash = None if raw_hash is None else bytes.fromhex(raw_hash)
            debug_locked = value["debug_locked"]
            counters = value["counters"]
        except (KeyError, ValueError, TypeError) as exc:
            raise StateCorruptError("fuses.json is malformed") from exc
        if boot_key_hash is not None and len(boot_key_hash) != BOOT_KEY_HASH_SIZE:
            raise StateCorruptError("fuses.json: boot_key_hash has the wrong size")
        if not isinstance(debug_locked, bool) or not isinstance(counters, dict):
            raise StateCorruptError("fuses.json is malformed")
        if len(counters) > MAX_COUNTERS:
            raise StateCorruptError("fuses.json holds too many counters")
        for name, number in counters.items():
            _check_counter(name, number, StateCorruptError)
        return cls(lifecycle, boot_key_hash, debug_locked, dict(counters))


def _check_counter(name: object, value: object, error: Callable[[str], Exception]) -> None:
    if not isinstance(name, str) or not _COUNTER_NAME.match(name):
        raise error(f"invalid counter name {name!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER_VALUE:
        raise error(f"counter {name!r} must be an integer in 0..{MAX_COUNTER_VALUE}")


class FuseBank:
    """The fuse bank of one chip, stored in a JSON file."""

    def __init__(self, path: Path) -> None:
        """Open the fuse bank stored at ``path`` (see :meth:`create` for a new one)."""
        self.path = path

    @classmethod
    def create(cls, path: Path) -> FuseBank:
        """Create a blank fuse bank at ``path``."""
        write_json(path, FuseState().to_json())
        return cls(path)

    def read(self) -> FuseState:
        """Return a snapshot of every fuse.

        Raises:
            StateCorruptError: ``fuses.json`` is missing or malformed.
        """
        return FuseState.from_json(read_json(self.path))

    def _update(self, change: Callable[[FuseState], FuseState]) -> FuseState:
        with locked(self.path):
            new = change(self.read())
            write_json(self.path, new.to_json())
            return new

    @property
    def lifecycle(self) -> Lifecycle:
        """The lifecycle state."""
        return self.read().lifecycle

    @property
    def boot_key_hash(self) -> bytes | None:
        """The fused SHA-256 of the boot-signing public key, or None if not burned."""
        return self.read().boot_key_hash

    @property
    def debug_locked(self) -> bool:
        """Whether debug access is permanently disabled."""
        return self.read().debug_locked

    def counter(self, name: str) -> int:
        """Return an anti-rollback counter (0 if never burned)."""
        return self.read().counters.get(name, 0)

    def counters(self) -> dict[str, int]:
        """Return every anti-rollback counter."""
        return dict(self.read().counters)

    def advance_lifecycle(self, target: Lifecycle) -> None:
        """Move the lifecycle forward to ``target`` (no-op if already there).

        Raises:
            FuseWriteError: ``target`` is earlier than the current state.
        """

        def change(state: FuseState) -> FuseState:
            if _ORDER[target] < _ORDER[state.lifecycle]:
                raise FuseWriteError(f"lifecycle cannot go back from {state.lifecycle.value} to {target.value}")
            return replace(state, lifecycle=target)

        self._update(change)

    def burn_boot_key_hash(self, digest: bytes) -> None:
        """Burn the SHA-256 of the vendor boot-signing public key (write-once).

        Raises:
            FuseWriteError: the hash is already burned, or ``digest`` is not 32 bytes.
        """
        if len(digest) != BOOT_KEY_HASH_SIZE:
            raise FuseWriteError(f"boot key hash must be {BOOT_KEY_HASH_SIZE} bytes")

        def change(state: FuseState) -> FuseState:
            if state.boot_key_hash is not None:
                raise FuseWriteError("boot key hash is already burned (write-once fuse)")
            return replace(state, boot_key_hash=digest)

        self._update(change)

    def lock_debug(self) -> None:
        """Permanently disable debug access (idempotent)."""
        self._update(lambda state: replace(state, debug_locked=True))

    def burn_counter(self, name: str, value: int) -> None:
        """Raise an anti-rollback counter to ``value`` (equal is a no-op).

        Raises:
            CounterRollbackError: ``value`` is below the current counter.
            FuseWriteError: invalid name or value, or the bank is full.
        """
        _check_counter(name, value, FuseWriteError)

        def change(state: FuseState) -> FuseState:
            current = state.counters.get(name)
            if current is not None and value < current:
                raise CounterRollbackError(f"anti-rollback counter {name!r} is {current}; refusing to burn {value}")
            if current is None and len(state.counters) >= MAX_COUNTERS:
                raise FuseWriteError(f"the fuse bank has no room for counter {name!r}")
            return replace(state, counters={**state.counters, name: value})

        self._update(change)
