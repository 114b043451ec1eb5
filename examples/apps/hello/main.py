#!/usr/bin/env python3
"""Bastion sample app: logs a heartbeat line with its version every second.

The version is read from the ``app_manifest.json`` packaged beside this file
(``bastion app package --version`` writes it there), so the output does not
depend on the device directory. Output goes to stdout only.

    python main.py [--beats N] [--interval SECONDS]

``--beats N`` stops after N heartbeats (default: run until stopped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "app_manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024


def app_version() -> str:
    """Return the app's version from its manifest, or "unknown"."""
    try:
        with MANIFEST.open("rb") as handle:
            value = json.loads(handle.read(MAX_MANIFEST_BYTES))
    except (OSError, ValueError):
        return "unknown"
    version = value.get("Version") if isinstance(value, dict) else None
    return version if isinstance(version, str) else "unknown"


def main(argv: list[str] | None = None) -> int:
    """Print ``hello <version> heartbeat <n>`` once per interval."""
    parser = argparse.ArgumentParser(description="Bastion sample app")
    parser.add_argument("--beats", type=int, default=0, help="stop after N heartbeats (0: never)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats")
    args = parser.parse_args(argv)
    version = app_version()
    beat = 0
    while args.beats <= 0 or beat < args.beats:
        beat += 1
        sys.stdout.write(f"hello {version} heartbeat {beat}\n")
        sys.stdout.flush()
        if args.beats <= 0 or beat < args.beats:
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
