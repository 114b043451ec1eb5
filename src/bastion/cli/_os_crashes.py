"""The boot supervisor's crash policy: an OS crash is a reboot, a bounded number of times.

The OS exits deliberately with one of its statuses (:mod:`bastion.os.exitcodes`):
it stopped and said why, and ``device run`` stops with it (or reboots, for
``EXIT_REBOOT``). Anything else is a crash: a signal death (``kill -9``; a
sandboxed OS's bubblewrap reports it as ``128 + N``), an uncaught exception
(status 1), any other status. The supervisor then boots again and restarts
the OS, at most :data:`MAX_OS_CRASH_RESTARTS` times within
:data:`OS_CRASH_WINDOW_S`, and records an ``os_crashed`` event for the service.

Example:
    >>> crash_description(137)
    'killed by signal 9 (SIGKILL)'
    >>> crash_description(0) is None
    True
    >>> budget = CrashBudget(max_restarts=1, window_s=60.0)
    >>> budget.allow(now=0.0), budget.allow(now=10.0), budget.allow(now=100.0)
    (True, False, True)
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from bastion.os.exitcodes import EXIT_ATTESTATION, EXIT_CONFIG, EXIT_MONITOR, EXIT_OK, EXIT_REBOOT

__all__ = [
    "DELIBERATE_EXITS",
    "MAX_OS_CRASH_RESTARTS",
    "OS_CRASH_WINDOW_S",
    "CrashBudget",
    "crash_description",
    "exit_status",
]

#: Restarts after OS crashes allowed within :data:`OS_CRASH_WINDOW_S`; the next crash stops the run.
MAX_OS_CRASH_RESTARTS = 3
#: The window over which crashes count (seconds, monotonic).
OS_CRASH_WINDOW_S = 600.0
#: The statuses with which the OS stops on purpose.
DELIBERATE_EXITS = frozenset({EXIT_OK, EXIT_ATTESTATION, EXIT_MONITOR, EXIT_CONFIG, EXIT_REBOOT})
#: A shell-style status of a signal death: 128 + the signal number.
SIGNAL_STATUS_BASE = 128
_MAX_SIGNAL = 64


def _signal_name(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def crash_description(code: int) -> str | None:
    """What the OS died of, as a phrase; None when ``code`` is a deliberate exit.

    ``code`` is a ``Popen`` return code: negative for a signal death of the
    process itself, ``128 + N`` for one that bubblewrap reported.
    """
    if code in DELIBERATE_EXITS:
        return None
    if code < 0:
        return f"killed by {_signal_name(-code)}"
    if SIGNAL_STATUS_BASE < code <= SIGNAL_STATUS_BASE + _MAX_SIGNAL:
        return f"killed by {_signal_name(code - SIGNAL_STATUS_BASE)}"
    return f"exit status {code}"


def exit_status(code: int) -> int:
    """A ``Popen`` return code as a process exit status (a signal death becomes ``128 + N``)."""
    return SIGNAL_STATUS_BASE - code if code < 0 else code


@dataclass
class CrashBudget:
    """Counts OS crashes in a sliding window; time is a parameter.

    Attributes:
        max_restarts: restarts allowed within the window.
        window_s: the window, in seconds.
    """

    max_restarts: int = MAX_OS_CRASH_RESTARTS
    window_s: float = OS_CRASH_WINDOW_S
    _crashes: list[float] = field(default_factory=list, init=False)

    def allow(self, *, now: float) -> bool:
        """Record a crash at ``now``; whether the OS may be restarted once more."""
        self._crashes = [at for at in self._crashes if now - at < self.window_s]
        self._crashes.append(now)
        return len(self._crashes) <= self.max_restarts

    @property
    def recent(self) -> int:
        """Crashes in the window, as of the last :meth:`allow`."""
        return len(self._crashes)
