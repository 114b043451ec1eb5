"""What the update agent remembers across boots (``DEV/os-state/updates.json``, atomic).

- ``refused``: SHA-256 of targets that failed a check, with the reason; never retried.
- ``bad_os``: SHA-256 of OS images that were rolled back; never retried.
- ``pending_os``: the OS image handed to the monitor (version, SHA-256, the version it
  replaces) until it is confirmed or rolled back.
- ``deferral_started``: when the current app deferral began (the 24 h cap counts from it).
- ``update_noticed_at``: when the apps were told of the pending update (``update_pending``).
- ``last_boot_event_at``: the boot event already reported (a power cut between
  reporting and ``ack_boot_event`` does not report it twice).
- ``app_security``: per app, the security version of the installed target; a staged
  rollout's fallback never goes below it (anti-rollback, docs/updates.md "Staged rollouts").
- ``last_summary``: the last check's summary (for ``bastion device update-check``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bastion.hw.atomic import atomic_write_bytes

__all__ = ["MAX_REMEMBERED", "AgentState", "load_agent_state", "save_agent_state"]

#: Bound on the remembered refused and rolled-back targets (oldest forgotten first).
MAX_REMEMBERED = 128
#: Bound on the state file.
MAX_AGENT_STATE_BYTES = 64 * 1024
AGENT_STATE_FILE = "updates.json"


@dataclass
class AgentState:
    """The agent's persistent memory."""

    refused: dict[str, str] = field(default_factory=dict)
    bad_os: list[str] = field(default_factory=list)
    pending_os: dict[str, str] | None = None
    deferral_started: int | None = None
    update_noticed_at: int | None = None
    last_boot_event_at: int | None = None
    last_summary: dict[str, Any] | None = None
    app_security: dict[str, int] = field(default_factory=dict)

    def refuse(self, sha256: str, reason: str) -> None:
        """Remember a refused target (bounded)."""
        self.refused[sha256] = reason
        while len(self.refused) > MAX_REMEMBERED:
            del self.refused[next(iter(self.refused))]

    def mark_bad_os(self, sha256: str) -> None:
        """Remember a rolled-back OS image (bounded)."""
        if sha256 not in self.bad_os:
            self.bad_os.append(sha256)
        del self.bad_os[:-MAX_REMEMBERED]

    def remember_app_security(self, component_id: str, security_version: int) -> None:
        """Remember the security version of an app's installed target (bounded)."""
        self.app_security.pop(component_id, None)
        self.app_security[component_id] = security_version
        while len(self.app_security) > MAX_REMEMBERED:
            del self.app_security[next(iter(self.app_security))]

    def is_blocked(self, sha256: str) -> bool:
        """Whether a target must not be tried again."""
        return sha256 in self.refused or sha256 in self.bad_os


def load_agent_state(directory: Path) -> AgentState:
    """Read the state (a fresh one if missing or unreadable)."""
    try:
        with (directory / AGENT_STATE_FILE).open("rb") as handle:
            data = handle.read(MAX_AGENT_STATE_BYTES + 1)
        value = json.loads(data) if len(data) <= MAX_AGENT_STATE_BYTES else None
    except (OSError, ValueError):
        return AgentState()
    if not isinstance(value, dict):
        return AgentState()
    known = {f.name for f in fields(AgentState)}
    try:
        state = AgentState(**{k: v for k, v in value.items() if k in known})
    except TypeError:
        return AgentState()
    valid = (
        isinstance(value.get("refused", {}), dict)
        and isinstance(value.get("bad_os", []), list)
        and isinstance(value.get("app_security", {}), dict)
    )
    return state if valid else AgentState()


def save_agent_state(directory: Path, state: AgentState) -> None:
    """Write the state atomically."""
    data = json.dumps(asdict(state), sort_keys=True).encode() + b"\n"
    if len(data) > MAX_AGENT_STATE_BYTES:  # keep it readable: drop the summary first
        state.last_summary = None
        data = json.dumps(asdict(state), sort_keys=True).encode() + b"\n"
    atomic_write_bytes(directory / AGENT_STATE_FILE, data)
