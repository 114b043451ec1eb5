#!/usr/bin/env python3
"""Bastion sample app that crashes once: the demo's failure report.

On its first start it writes a marker to its mutable storage and fails with an
uncaught ``ValueError`` (a broken configuration line): the OS records the crash (exception type, frames,
stderr tail), queues it and uploads it signed at the next check-in, where the
service puts it in a bucket. Restarted by the OS, it finds the marker and logs
a heartbeat every second instead.

    python main.py [--beats N] [--interval SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import time

from bastion.applibs import storage
from bastion.applibs.errors import NotFoundError

MARKER = "crashed-once"


def crashed_before() -> bool:
    """Whether an earlier run already crashed (its marker is in mutable storage)."""
    try:
        storage.read_file(MARKER)
    except NotFoundError:
        return False
    return True


def parse_config(config: str) -> dict[str, str]:
    """Parse the sample's configuration text: one ``key=value`` per line."""
    pairs = [line.split("=", 1) for line in config.splitlines() if line.strip()]
    return {key.strip(): value.strip() for key, value in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--beats", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    if not crashed_before():
        storage.write_file(MARKER, b"1")
        print("crasher: first start, parsing a broken configuration", flush=True)
        parse_config("mode=demo\nthis line has no separator\n")  # ValueError -> the demo's one crash
    beat = 0
    while args.beats == 0 or beat < args.beats:
        beat += 1
        print(f"crasher: heartbeat {beat} (recovered after one crash)", flush=True)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
