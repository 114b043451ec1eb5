#!/usr/bin/env python3
"""Bastion sample app: logs a heartbeat line with its version every second.

The version is read from the ``app_manifest.json`` packaged beside this file
(``bastion app package --version`` writes it there), so the output does not
depend on the device directory. Output goes to stdout only.

    python main.py [--beats N] [--interval SECONDS]

``--beats N`` stops after N heartbeats (default: run until stopped).

On a Bastion device it first asks the OS, through applibs, for a connection to
``example.com:443``. Its manifest lists no ``AllowedConnections``, so the OS
refuses (and records the refusal); the app prints the refusal and carries on.
Its sandbox has no route out, so asking the OS is the only way to the network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "app_manifest.json"
#: A host the manifest does not list: the OS must refuse it.
UNLISTED_HOST = ("example.com", 443)
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


def probe_network() -> str | None:
    """Ask the OS for a host the manifest does not list; describe the answer (None off-device)."""
    try:
        from bastion.applibs import networking
        from bastion.applibs.errors import ApplibsError, NotConnectedError, PermissionDeniedError
    except ImportError:
        return None
    host, port = UNLISTED_HOST
    try:
        networking.connect(host, port).close()
    except NotConnectedError:
        return None
    except PermissionDeniedError as exc:
        return f"the OS refused {host}:{port} ({exc.capability}): {exc}"
    except ApplibsError as exc:
        return f"the OS did not connect {host}:{port}: {exc}"
    return f"the OS connected {host}:{port}"


def main(argv: list[str] | None = None) -> int:
    """Print ``hello <version> heartbeat <n>`` once per interval."""
    parser = argparse.ArgumentParser(description="Bastion sample app")
    parser.add_argument("--beats", type=int, default=0, help="stop after N heartbeats (0: never)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats")
    args = parser.parse_args(argv)
    version = app_version()
    outcome = probe_network()
    if outcome is not None:
        sys.stdout.write(f"hello {version}: {outcome}\n")
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
