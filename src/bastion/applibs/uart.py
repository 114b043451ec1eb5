"""UART, as Azure Sphere's ``applibs/uart.h``: open an ISU as a UART and get a byte stream.

The OS hands the app one end of a stream socket (as ``UART_Open`` returns an
fd); the other end is the UART's line, which the device exposes as
``DEV/periph/uart-ISU0.sock`` (``bastion device uart --dir DEV ISU0``).

Example::

    from bastion.applibs import uart
    with uart.open("ISU0") as port:
        port.write(b"hello\\r\\n")
        line = port.read(64)
"""

from __future__ import annotations

import socket
from types import TracebackType

from bastion.applibs._client import connection
from bastion.applibs._handle import PeripheralId
from bastion.applibs.errors import TransportError

__all__ = ["DEFAULT_BAUD_RATE", "Uart", "open"]

DEFAULT_BAUD_RATE = 115200


class Uart:
    """An open UART: ``read``/``write`` bytes, or use :meth:`fileno` with ``select``."""

    def __init__(self, peripheral_id: PeripheralId, sock: socket.socket) -> None:
        self.id = peripheral_id
        self._sock = sock

    def fileno(self) -> int:
        """The stream's fd (for ``select``/``selectors``)."""
        return self._sock.fileno()

    def write(self, data: bytes) -> int:
        """Send all of ``data``; returns its length."""
        self._sock.sendall(data)
        return len(data)

    def read(self, max_bytes: int = 4096, *, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` received bytes; ``b""`` if none came within ``timeout`` (``None``: wait)."""
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv(max_bytes)
        except TimeoutError:
            return b""

    def close(self) -> None:
        """Close the UART (the OS releases it when its end sees the close)."""
        self._sock.close()

    def __enter__(self) -> Uart:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def open(peripheral_id: PeripheralId, baud_rate: int = DEFAULT_BAUD_RATE) -> Uart:  # noqa: A001 - Azure Sphere's name
    """Open a UART (``UART_Open``)."""
    result, fds = connection().call_fds("uart.open", {"id": peripheral_id, "baud_rate": baud_rate})
    del result
    if len(fds) != 1:
        for fd in fds:
            socket.socket(fileno=fd).close()
        raise TransportError("the OS sent no UART stream")
    return Uart(peripheral_id, socket.socket(fileno=fds[0]))
