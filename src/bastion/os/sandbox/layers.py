"""One line per app saying which sandbox layers are on (``device apps`` and the status report).

Example:
    >>> summarize({"sandbox": "none (insecure-no-sandbox)"})
    'none (insecure-no-sandbox)'
    >>> summarize({"sandbox": "bubblewrap", "uid": 10001, "namespaces": ["user", "pid"],
    ...            "seccomp": "kill-process denylist", "seccomp_filters": 1,
    ...            "landlock": {"abi": 7, "net": True, "scoped": ["signal"]},
    ...            "limits": {"nproc": 32, "address_space_bytes": 268435456, "nofile": 64}, "confirmed": True})
    'bwrap uid=10001 ns=user,pid seccomp landlock=7+net+scoped nproc=32 as=256M nofile=64'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_SUMMARY_CHARS", "summarize"]

#: Bound on one summary (the status report carries it per app).
MAX_SUMMARY_CHARS = 160
_MIB = 1024 * 1024


def _landlock(value: object) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("abi"), int) and value["abi"] > 0:
        text = f"landlock={value['abi']}"
        if value.get("net"):
            text += "+net"
        if value.get("scoped"):
            text += "+scoped"
        return text
    if value == "pending":
        return "landlock=unconfirmed"
    return "landlock=none"


def summarize(layers: Mapping[str, Any]) -> str:
    """The layers as one short line (a real-time app's core first: ``rt-core=0``)."""
    core = layers.get("realtime_core")
    prefix = f"rt-core={core} " if isinstance(core, int) and not isinstance(core, bool) else ""
    kind = str(layers.get("sandbox", "unknown"))
    if kind != "bubblewrap":
        missing = layers.get("missing")
        return (prefix + (f"{kind}: {missing}" if missing else kind))[:MAX_SUMMARY_CHARS]
    parts = [f"bwrap uid={layers.get('uid')}", "ns=" + ",".join(str(n) for n in layers.get("namespaces", []))]
    filters = layers.get("seccomp_filters")
    parts.append("seccomp" if filters is None or filters else "seccomp=NOT-LOADED")
    parts.append(_landlock(layers.get("landlock")))
    if isinstance(layers.get("cgroup"), Mapping):
        parts.append("cgroup")
    limits = layers.get("limits", {})
    if isinstance(limits, Mapping):
        if "nproc" in limits:
            parts.append(f"nproc={limits['nproc']}")
        if isinstance(limits.get("address_space_bytes"), int):
            parts.append(f"as={limits['address_space_bytes'] // _MIB}M")
        if "nofile" in limits:
            parts.append(f"nofile={limits['nofile']}")
    return (prefix + " ".join(parts))[:MAX_SUMMARY_CHARS]
