"""Entry point of the monitor process: ``python -m bastion.monitor --sock-fd N --handoff-fd M``.

The boot process starts it with two inherited file descriptors: its end of the
socketpair shared with the OS, and the read end of a pipe carrying the
hand-off (:mod:`bastion.monitor.identity`). Neither argv nor the environment
holds a secret. The process serves until the OS closes its end, then exits 0.
Exit status 2 means the hand-off was unusable.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from types import FrameType

from bastion.jsonlog import JsonFormatter
from bastion.monitor.errors import HandoffError, MonitorError
from bastion.monitor.identity import MAX_HANDOFF_BYTES, decode_handoff
from bastion.monitor.server import MonitorServer

EXIT_OK = 0
EXIT_BAD_HANDOFF = 2
EXIT_TRANSPORT = 3


def read_handoff(fd: int) -> bytearray:
    """Read the whole hand-off from ``fd`` (bounded) and close it.

    Raises:
        HandoffError: the hand-off is larger than MAX_HANDOFF_BYTES.
    """
    data = bytearray()
    try:
        while chunk := os.read(fd, 8192):
            data += chunk
            if len(data) > MAX_HANDOFF_BYTES:
                raise HandoffError(f"hand-off is larger than {MAX_HANDOFF_BYTES} bytes")
    finally:
        os.close(fd)
    return data


def _stop(signum: int, frame: FrameType | None) -> None:
    del frame
    logging.getLogger("bastion.monitor").info("stopping on signal %d", signum)
    sys.exit(EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    """Run the monitor; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="bastion.monitor")
    parser.add_argument("--sock-fd", type=int, required=True)
    parser.add_argument("--handoff-fd", type=int, required=True)
    args = parser.parse_args(argv)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter(process="monitor"))  # one JSON object per line (ADR 0019)
    logging.basicConfig(level=logging.INFO, handlers=[stream])
    log = logging.getLogger("bastion.monitor")
    signal.signal(signal.SIGTERM, _stop)
    # ^C reaches the whole process group; the monitor stops when the OS closes
    # its socket (or on SIGTERM), so it outlives the OS's orderly shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raw = bytearray()
    try:
        raw = read_handoff(args.handoff_fd)
        identity = decode_handoff(raw)
    except (HandoffError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BAD_HANDOFF
    finally:
        raw[:] = bytes(len(raw))  # best effort: do not keep the serialized key around
    sock = socket.socket(fileno=args.sock_fd)
    log.info("serving device %s (slot %s, OS %s)", identity.device_id, identity.boot_slot, identity.os_version)
    try:
        MonitorServer(identity).serve(sock)
    except MonitorError as exc:
        log.error("connection failed: %s", exc)
        return EXIT_TRANSPORT
    finally:
        sock.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
