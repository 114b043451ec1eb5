"""The application watchdog: if the app stops kicking it, the OS kills and restarts the app.

Any app may arm it. After :func:`arm`, call :func:`kick` more often than the
timeout; an app that misses the deadline (hung, deadlocked, stuck in a loop) is
killed, restarted with the normal crash backoff, and an ``app_watchdog`` event
records why. A restarted app starts with the watchdog off.

Example::

    from bastion.applibs import watchdog
    watchdog.arm(10.0)
    while True:
        do_one_step()
        watchdog.kick()
"""

from __future__ import annotations

from bastion.applibs._client import connection

__all__ = ["MAX_TIMEOUT_S", "MIN_TIMEOUT_S", "arm", "disarm", "kick"]

#: The OS's bounds on the timeout.
MIN_TIMEOUT_S = 1.0
MAX_TIMEOUT_S = 3600.0


def arm(timeout_s: float) -> None:
    """Arm (or re-arm) the watchdog with ``timeout_s`` (:data:`MIN_TIMEOUT_S`..:data:`MAX_TIMEOUT_S`)."""
    connection().call("watchdog.arm", {"timeout_ms": round(timeout_s * 1000)})


def kick() -> None:
    """Push the deadline out by the armed timeout.

    Raises:
        NotFoundError: the watchdog is not armed.
    """
    connection().call("watchdog.kick")


def disarm() -> None:
    """Turn the watchdog off."""
    connection().call("watchdog.disarm")
