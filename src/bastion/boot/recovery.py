"""The recovery record: why the chip did not start its OS.

``DEV/recovery.json`` is written atomically when any boot check fails, and
removed by the next good boot::

    {"stage": "bootloader", "check": "rollback", "reason": "...", "time": "<ISO 8601>"}
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.hw.atomic import atomic_write_bytes

__all__ = ["MAX_RECOVERY_BYTES", "RECOVERY_FILE", "RecoveryState", "clear_recovery", "read_recovery", "write_recovery"]

RECOVERY_FILE = "recovery.json"
#: Bound on the recovery record when reading it back.
MAX_RECOVERY_BYTES = 16 * 1024


@dataclass(frozen=True)
class RecoveryState:
    """Why the last boot failed."""

    stage: str
    check: str
    reason: str
    time: dt.datetime

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"stage": self.stage, "check": self.check, "reason": self.reason, "time": self.time.isoformat()}


def write_recovery(dev_dir: Path, state: RecoveryState) -> None:
    """Record a failed boot (atomically)."""
    data = json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    atomic_write_bytes(dev_dir / RECOVERY_FILE, data)


def clear_recovery(dev_dir: Path) -> None:
    """Remove the recovery record after a good boot."""
    (dev_dir / RECOVERY_FILE).unlink(missing_ok=True)


def read_recovery(dev_dir: Path) -> RecoveryState | None:
    """Return the recovery record, or None if the chip is not in recovery.

    A record that cannot be parsed still means recovery; it is reported as such.
    """
    path = dev_dir / RECOVERY_FILE
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RECOVERY_BYTES + 1)
    except FileNotFoundError:
        return None
    unknown = RecoveryState(
        "unknown", "unknown", "the recovery record is unreadable", dt.datetime.min.replace(tzinfo=dt.UTC)
    )
    if len(data) > MAX_RECOVERY_BYTES:
        return unknown
    try:
        value = json.loads(data)
        return RecoveryState(
            str(value["stage"]), str(value["check"]), str(value["reason"]), dt.datetime.fromisoformat(value["time"])
        )
    except (ValueError, TypeError, KeyError, RecursionError):
        return unknown
