"""SystemTime: read and set the device clock.

Any app may read the device time (:func:`get_time`); setting it needs
``"SystemTime": true``. The device time is the host clock plus an offset that
the OS keeps (and records each change of). The OS refuses a time before the
device certificate's ``notBefore`` (its TLS would fail) or farther than about a
year from the host clock. ``time.time()`` inside the sandbox reads the host
clock, not the device time.

Example::

    from bastion.applibs import rtc
    rtc.set_time(1767225600)          # from a GPS fix, say
    print(rtc.get_time())
"""

from __future__ import annotations

from bastion.applibs._client import connection

__all__ = ["get_time", "set_time"]


def set_time(epoch: int) -> int:
    """Set the device time to ``epoch`` (seconds since 1970, UTC); returns the new offset from the host clock."""
    return int(connection().call("rtc.set_time", {"epoch": int(epoch)})["offset_s"])


def get_time() -> float:
    """The device time, in seconds since 1970 (UTC)."""
    return float(connection().call("rtc.get_time")["epoch"])
