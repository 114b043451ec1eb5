"""Per-app cgroups (pids, memory) where the OS may write them; rlimits cover the rest.

RLIMIT_NPROC does not bind a process whose host uid is root (the kernel exempts
``INIT_USER``), which an app is when the OS itself runs as root. So where the
cgroup v1 ``pids`` (and ``memory``) hierarchies, or a cgroup v2 tree with those
controllers, are writable, each sandbox gets its own cgroup: ``pids.max``
bounds every process and thread of the sandbox together, ``memory`` bounds
what it holds, its ``/tmp`` pages included. Where they are not writable (an
unprivileged OS), the rlimits set inside the sandbox's user namespace apply,
and they do bind a non-root uid.

Bubblewrap is started through ``/bin/sh -c 'echo $$ > DIR/cgroup.procs ...; exec bwrap ...'``,
so the sandbox is in its cgroup before it creates any process.

Example::

    group = AppCgroups().create(component_id, pids_max=34, memory_bytes=256 << 20)
    argv = group.wrap(bwrap_argv) if group else bwrap_argv
    ...
    group.remove()                      # once the sandbox has ended
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CGROUP_ROOT", "PARENT", "AppCgroup", "AppCgroups"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The directory under each hierarchy that holds the app cgroups.
PARENT = "bastion-apps"
_SHELL = "/bin/sh"

_log = logging.getLogger("bastion.os.sandbox")


@dataclass(frozen=True)
class AppCgroup:
    """One sandbox's cgroup directories (one per hierarchy) and their limits."""

    dirs: tuple[Path, ...]
    pids_max: int
    memory_bytes: int | None

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started from a shell that first joins these cgroups."""
        joins = " && ".join(f'echo $$ > "${i + 1}/cgroup.procs"' for i in range(len(self.dirs)))
        return (
            [_SHELL, "-c", f'{joins} && shift {len(self.dirs)} && exec "$@"', "bastion-cgroup"]
            + [str(d) for d in self.dirs]
            + argv
        )

    def to_json(self) -> dict[str, int | None]:
        """The limits as reported in the app's layers."""
        return {"pids_max": self.pids_max, "memory_bytes": self.memory_bytes}

    def remove(self) -> None:
        """Remove the (now empty) directories."""
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                directory.rmdir()


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


class AppCgroups:
    """Finds the writable pids and memory hierarchies once, then makes one cgroup per sandbox.

    Args:
        root: the cgroup mount point (a parameter for tests).
    """

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.pids: Path | None = None
        self.memory: Path | None = None
        self.missing: str | None = None
        v2 = root / "cgroup.controllers"
        if v2.is_file():
            self._find_v2(root)
        else:
            self.pids = root / "pids" if _writable(root / "pids") else None
            self.memory = root / "memory" if _writable(root / "memory") else None
        if self.pids is None:
            self.missing = f"no writable pids cgroup under {root} (the rlimits bound the app instead)"

    def _find_v2(self, root: Path) -> None:
        with contextlib.suppress(OSError):
            controllers = (root / "cgroup.controllers").read_text().split()
            if "pids" in controllers and _writable(root):
                self.pids = root
                self.memory = root if "memory" in controllers else None

    def _make(self, hierarchy: Path, name: str) -> Path:
        parent = hierarchy / PARENT
        parent.mkdir(exist_ok=True)
        if hierarchy == self.pids and (hierarchy / "cgroup.controllers").is_file():
            with contextlib.suppress(OSError):  # cgroup v2: enable the controllers for the children
                (parent / "cgroup.subtree_control").write_text("+pids +memory" if self.memory else "+pids")
        directory = parent / name
        with contextlib.suppress(OSError):
            directory.rmdir()  # a stale, empty one from an OS that did not clean up
        if directory.exists():
            directory = parent / f"{name}-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        return directory

    def create(self, component_id: str, *, pids_max: int, memory_bytes: int | None) -> AppCgroup | None:
        """A new cgroup for one sandbox, or ``None`` where none is writable (or making one failed)."""
        if self.pids is None:
            return None
        made: list[Path] = []
        try:
            pids = self._make(self.pids, component_id)
            made.append(pids)
            (pids / "pids.max").write_text(str(pids_max))
            if self.memory is not None and memory_bytes is not None:
                if self.memory == self.pids:
                    (pids / "memory.max").write_text(str(memory_bytes))
                else:
                    memory = self._make(self.memory, component_id)
                    made.append(memory)
                    (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        except OSError as exc:
            _log.warning("no cgroup for app %s: %s", component_id, exc)
            AppCgroup(tuple(made), pids_max, memory_bytes).remove()
            return None
        memory_limit = memory_bytes if self.memory is not None else None
        return AppCgroup(tuple(made), pids_max, memory_limit)
