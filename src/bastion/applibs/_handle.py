"""The common shape of an open peripheral: a name the OS resolved, ``close()``, a context manager."""

from __future__ import annotations

import base64
from types import TracebackType
from typing import Any

from bastion.applibs._client import connection

__all__ = ["PeripheralHandle", "PeripheralId", "decode", "encode"]

#: A peripheral as the manifest names it: a number (GPIO 8), a raw name (``ISU0``) or a ``$NAME``.
PeripheralId = int | str


def encode(data: bytes) -> str:
    """Bytes as the request's base64 text."""
    return base64.b64encode(bytes(data)).decode("ascii")


def decode(result: dict[str, Any], key: str = "data_b64") -> bytes:
    """Bytes from a reply's base64 field."""
    return base64.b64decode(str(result.get(key, "")))


class PeripheralHandle:
    """An open peripheral; closing it releases it (also at ``with`` exit)."""

    _area = ""

    def __init__(self, peripheral_id: PeripheralId) -> None:
        self.id = peripheral_id
        self.closed = False

    def _call(self, verb: str, **args: Any) -> dict[str, Any]:
        return connection().call(f"{self._area}.{verb}", {"id": self.id, **args})

    def close(self) -> None:
        """Release the peripheral (idempotent)."""
        if not self.closed:
            self.closed = True
            self._call("close")

    def __enter__(self) -> PeripheralHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"
