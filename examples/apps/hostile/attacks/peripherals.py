"""Attacks on the emulated peripherals: their state files, a UART another app has open.

The peripheral state lives in ``DEV/periph`` on the host, outside the app's
mount namespace: an app reaches a peripheral only through applibs (and only one
its manifest declares; ``applibs_no_capability`` tries those ops). So pressing
another app's button, driving its LED by rewriting ``gpio.json``, or attaching
to the UART socket of another app must all fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from attacks import Context, Outcome, attack, read_file, try_each, write_file

__all__: list[str] = []

STATE_FILES = ("board.json", "gpio.json", "adc.json", "pwm.json", "i2c.json", "spi.json")


def _create(path: str) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    return fd


@attack("periph_state_files")
def periph_state_files(ctx: Context) -> Outcome:
    """Read and rewrite the peripheral state by its host path (press a button, drive an LED)."""
    attempts: list[tuple[str, Callable[[], object]]] = []
    for name in STATE_FILES:
        for path in ctx.under_dev("periph", name):
            attempts.append((f"read {path}", lambda p=path: read_file(p)))
            attempts.append((f"write {path}", lambda p=path: write_file(p, b'{"pins": {}}')))
    for path in ctx.under_dev("periph", "planted.json"):
        attempts.append((f"create {path}", lambda p=path: _create(p)))
    for path in ctx.under_dev("periph"):
        attempts.append((f"list {path}", lambda p=path: "\n".join(os.listdir(p)).encode()))
    return try_each(attempts)


def _connect(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.connect(path)
        sock.sendall(b"injected\n")
        return sock.recv(64)


@attack("periph_uart_socket")
def periph_uart_socket(ctx: Context) -> Outcome:
    """Attach to the UART socket of an app that has ISU0 open, to read and inject its serial line."""
    paths = ctx.under_dev("periph", "uart-ISU0.sock") + ctx.under_dev("periph", "uart-ISU1.sock")
    return try_each([(f"connect {p}", lambda p=p: _connect(p)) for p in paths])
