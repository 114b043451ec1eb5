"""Exceptions raised by :mod:`bastion.monitor`.

The tree::

    MonitorError
    ├── MonitorProtocolError   a frame or message that breaks the protocol:
    │   │                      bad CBOR, wrong shape, wrong argument types
    │   └── FrameTooLargeError      a length prefix above MAX_FRAME_BYTES
    ├── MonitorRefusedError         the monitor answered with an error response
    │                          (``code`` and ``detail`` say why)
    ├── MonitorUnavailableError     the transport failed: socket closed, reset or timed out
    └── HandoffError           the boot stage's hand-off to the monitor is unusable

No error carries key material; ``detail`` strings are safe to log.
"""

from __future__ import annotations

__all__ = [
    "FrameTooLargeError",
    "HandoffError",
    "MonitorError",
    "MonitorProtocolError",
    "MonitorRefusedError",
    "MonitorUnavailableError",
]


class MonitorError(Exception):
    """Root of all errors raised by :mod:`bastion.monitor`."""


class MonitorProtocolError(MonitorError):
    """A frame or message broke the monitor protocol."""


class FrameTooLargeError(MonitorProtocolError):
    """A frame's length prefix exceeds the bound; ``length`` is what it claimed."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the {limit}-byte limit")
        self.length = length
        self.limit = limit


class MonitorRefusedError(MonitorError):
    """The monitor refused a request: ``code`` (see ``docs/monitor-api.md``) and ``detail`` say why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"monitor refused the request ({code}): {detail}")
        self.code = code
        self.detail = detail


class MonitorUnavailableError(MonitorError):
    """The connection to the monitor failed or was closed."""


class HandoffError(MonitorError):
    """The identity handed from the boot stage to the monitor is malformed or inconsistent."""
