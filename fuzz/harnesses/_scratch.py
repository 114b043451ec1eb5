"""A scratch directory for harnesses that must go through files (in memory when the system has /dev/shm)."""

from __future__ import annotations

import tempfile
from pathlib import Path

_SHM = Path("/dev/shm")  # noqa: S108 - a tmpfs: file round trips cost microseconds, not a millisecond


def scratch_dir(prefix: str) -> Path:
    """A new private directory for one harness process."""
    base = _SHM if _SHM.is_dir() else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
