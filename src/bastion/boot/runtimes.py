"""Bounded disk: remove the unpacked OS runtimes no slot holds, and interrupted unpacks.

The bootloader unpacks the OS it boots to ``DEV/run/os-<measurement hex[:16]>/``
(reusing an intact one) through a temp directory ``DEV/run/.os-<...>.<hex>.tmp``
that a power cut can leave behind. Without pruning, every OS ever booted stays
unpacked. At each boot, once the booted runtime is in place, :func:`prune_runtimes`
removes every ``os-*`` runtime that is neither the booted one nor the other
slot's, and every ``.os-*.tmp`` left by an interrupted unpack, looking at no more
than :data:`MAX_RUN_ENTRIES` entries (bounded work per boot: a directory that
grew beyond it shrinks over several boots).

Example:
    >>> prune_runtimes(dev_dir / "run", keep={"os-0123456789abcdef"})  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from bastion.images.fileio import remove_tree

__all__ = ["MAX_RUN_ENTRIES", "prune_runtimes"]

#: Bound on the entries of ``DEV/run`` looked at per boot.
MAX_RUN_ENTRIES = 64
_RUNTIME = re.compile(r"os-[0-9a-f]{16}")
_INTERRUPTED = re.compile(r"\.os-[0-9a-f]{16}\.[0-9a-f]+\.tmp")


def prune_runtimes(run_dir: Path, *, keep: Collection[str], max_entries: int = MAX_RUN_ENTRIES) -> list[str]:
    """Remove OS runtimes not in ``keep`` and interrupted unpacks under ``run_dir``; return the names removed.

    Only names the bootloader itself creates are touched (the bootloader's own
    ``bl-*`` tree and anything else are left alone). Errors are ignored: pruning
    is housekeeping and must never stop a boot.
    """
    removed: list[str] = []
    try:
        entries = []
        for count, entry in enumerate(run_dir.iterdir()):
            if count >= max_entries:
                break
            entries.append(entry)
    except OSError:
        return removed
    for entry in sorted(entries):
        name = entry.name
        stale = (_RUNTIME.fullmatch(name) is not None and name not in keep) or _INTERRUPTED.fullmatch(name) is not None
        if not stale:
            continue
        try:
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
            else:
                remove_tree(entry)
        except OSError:
            continue
        removed.append(name)
    return removed
