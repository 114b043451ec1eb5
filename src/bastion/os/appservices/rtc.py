"""SystemTime: an app may set the device clock (an offset the OS keeps over the host clock).

==================  ==============  ==========================================
op                  capability      args -> result
==================  ==============  ==========================================
``rtc.set_time``    SystemTime      ``epoch`` (s) -> ``epoch``, ``offset_s``
``rtc.get_time``    none            -> ``epoch``, ``offset_s``
==================  ==============  ==========================================

The device time is the host's clock plus an offset, kept in a file (it
survives reboots, like a real RTC) and bounded by
:attr:`ClockLimits.max_offset_s`. Every accepted change is recorded as a
``clock_set`` event (old and new offset); an app may set the clock at most
:attr:`ClockLimits.max_sets_per_boot` times per boot, so its events stay bounded.

What the offset moves, and what it does not (the choice this module makes):

- It is the device time apps read (``rtc.get_time``) and that the OS may use
  for the TLS it does on an app's behalf (:meth:`DeviceClockService.now`).
- The OS's own security decisions (attestation and certificate renewal, TUF
  metadata expiry, the 24 h deferral cap, watchdog deadlines) stay on the
  host clock: an app cannot move time under them.
- A time before the device certificate's ``notBefore`` (or before
  :attr:`ClockLimits.earliest`) is **refused** with an error that says so,
  never applied in silence: the device's own certificate would then look
  not yet valid.

Example (OS side)::

    clock = DeviceClockService(state_dir.path / "clock.json", not_before=lambda: cert_not_before)
    clock.set_time(dt.datetime(2026, 5, 1, tzinfo=dt.UTC), host_now=now)
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.images.fileio import FileTooLargeError, atomic_write_bytes, read_bounded
from bastion.os.appservices.clock import current_time
from bastion.os.appservices.registry import (
    AppContext,
    Args,
    BadRequestError,
    Operation,
    QuotaExceededError,
    Reply,
    arg_int,
)

__all__ = ["CLOCK_SET_EVENT", "OPERATIONS", "ClockLimits", "DeviceClockService"]

CLOCK_SET_EVENT = "clock_set"
_MAX_FILE_BYTES = 1024
_MAX_EPOCH = 2**40


@dataclass(frozen=True)
class ClockLimits:
    """Bounds of the device clock.

    Attributes:
        max_offset_s: farthest the device time may be from the host clock.
        earliest: no device time before this.
        max_sets_per_boot: times one app may set the clock per OS boot (each is an event,
            so a flood cannot push other events out of the bounded queue).
    """

    max_offset_s: int = 366 * 24 * 3600
    earliest: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    max_sets_per_boot: int = 32


class DeviceClockService:
    """The device clock offset (see the module docstring).

    Args:
        path: where the offset is kept (``None``: memory only).
        not_before: the device certificate's ``notBefore``, if the device has one.
        limits: the bounds.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        not_before: Callable[[], dt.datetime | None] = lambda: None,
        limits: ClockLimits | None = None,
    ) -> None:
        self._path = path
        self._not_before = not_before
        self.limits = limits or ClockLimits()
        self._lock = threading.Lock()
        self._sets: dict[str, int] = {}
        self.offset_s = self._load()

    def now(self, host_now: dt.datetime) -> dt.datetime:
        """The device time at host time ``host_now``."""
        return host_now + dt.timedelta(seconds=self.offset_s)

    def set_time(self, value: dt.datetime, host_now: dt.datetime, *, by: str = "") -> tuple[int, int]:
        """Make the device time ``value`` at host time ``host_now`` (``by``: the app asking).

        Returns:
            The old and new offset, in seconds.

        Raises:
            BadRequestError: ``value`` is before the device certificate's notBefore or
                :attr:`ClockLimits.earliest`, or farther than the bound from the host clock.
            QuotaExceededError: ``by`` set the clock :attr:`ClockLimits.max_sets_per_boot` times already.
        """
        with self._lock:
            if self._sets.get(by, 0) >= self.limits.max_sets_per_boot:
                raise QuotaExceededError(
                    f"the app set the device clock {self.limits.max_sets_per_boot} times since boot, the most it may"
                )
        if value < self.limits.earliest:
            raise BadRequestError(f"the device time cannot be before {self.limits.earliest.date().isoformat()}")
        not_before = self._not_before()
        if not_before is not None and value < not_before:
            raise BadRequestError(
                "refused: that time is before the device certificate's notBefore "
                f"({not_before.isoformat(timespec='seconds')}); the device's TLS would fail"
            )
        offset = int((value - host_now).total_seconds())
        if abs(offset) > self.limits.max_offset_s:
            raise BadRequestError(f"the device time may be at most {self.limits.max_offset_s} s from the host clock")
        with self._lock:
            self._sets[by] = self._sets.get(by, 0) + 1
            old, self.offset_s = self.offset_s, offset
            if self._path is not None:
                atomic_write_bytes(self._path, json.dumps({"offset_s": offset}).encode() + b"\n")
        return old, offset

    def _load(self) -> int:
        if self._path is None:
            return 0
        try:
            value = json.loads(read_bounded(self._path, _MAX_FILE_BYTES))
        except (OSError, ValueError, FileTooLargeError):
            return 0
        offset = value.get("offset_s") if isinstance(value, dict) else None
        if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > self.limits.max_offset_s:
            return 0
        return offset


def _set_time(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(DeviceClockService)
    epoch = arg_int(args, "epoch", low=0, high=_MAX_EPOCH)
    host_now = current_time(ctx)
    old, new = service.set_time(dt.datetime.fromtimestamp(epoch, dt.UTC), host_now, by=ctx.component_id)
    ctx.record(CLOCK_SET_EVENT, f"device clock offset {new:+d} s (was {old:+d} s)")
    return Reply({"epoch": epoch, "offset_s": new})


def _get_time(ctx: AppContext, args: Args) -> Reply:
    del args
    service = ctx.service(DeviceClockService)
    return Reply({"epoch": service.now(current_time(ctx)).timestamp(), "offset_s": service.offset_s})


OPERATIONS = (
    Operation("rtc.set_time", _set_time, capability="SystemTime"),
    Operation("rtc.get_time", _get_time, capability=None),
)
