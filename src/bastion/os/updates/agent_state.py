"""What the update agent remembers across boots (``DEV/os-state/updates.json``, atomic).

- ``refused``: SHA-256 of targets that failed a check, with the reason; never retried.
- ``bad_os``: SHA-256 of OS images blocklisted now (a failed trial); see the retry policy below.
- ``os_trials``: per OS image SHA-256, its trial record ``{"interrupted": n, "failed": n,
  "retry_at": t}``: consecutive interrupted trials, failed trials, and when a blocklisted
  image may be tried again (0: not before a service clear).
- ``applied_clears``: ids of the service's blocklist clears already applied (bounded).

Retry policy (ADR 0018): an *interrupted* trial (power cut, no verdict) does not blocklist;
after :data:`MAX_INTERRUPTED_TRIALS` interruptions in a row it counts as one failure (a trial
OS that takes the whole device down every time looks interrupted). A *failed* image is
blocklisted and tried again after :data:`FAILED_RETRY_BACKOFF_S` (doubling), at most
:data:`MAX_FAILED_RETRIES` times; then only a service clear lifts it.
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

__all__ = [
    "FAILED_RETRY_BACKOFF_S",
    "MAX_FAILED_RETRIES",
    "MAX_INTERRUPTED_TRIALS",
    "MAX_REMEMBERED",
    "AgentState",
    "load_agent_state",
    "save_agent_state",
]

#: Bound on the remembered refused and rolled-back targets (oldest forgotten first).
MAX_REMEMBERED = 128
#: Bound on the state file.
MAX_AGENT_STATE_BYTES = 64 * 1024
AGENT_STATE_FILE = "updates.json"
#: Interrupted trials in a row of one image before they count as one failure.
MAX_INTERRUPTED_TRIALS = 3
#: Times a failed image is tried again (after the backoff) before only a service clear lifts it.
MAX_FAILED_RETRIES = 2
#: Wait before the first retry of a failed image (doubles each time): 6 h, then 12 h.
FAILED_RETRY_BACKOFF_S = 6 * 3600


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
    os_trials: dict[str, dict[str, int]] = field(default_factory=dict)
    applied_clears: list[str] = field(default_factory=list)

    def refuse(self, sha256: str, reason: str) -> None:
        """Remember a refused target (bounded)."""
        self.refused[sha256] = reason
        while len(self.refused) > MAX_REMEMBERED:
            del self.refused[next(iter(self.refused))]

    def mark_bad_os(self, sha256: str) -> None:
        """Blocklist an OS image now (bounded)."""
        if sha256 not in self.bad_os:
            self.bad_os.append(sha256)
        del self.bad_os[:-MAX_REMEMBERED]

    def remember_app_security(self, component_id: str, security_version: int) -> None:
        """Remember the security version of an app's installed target (bounded)."""
        self.app_security.pop(component_id, None)
        self.app_security[component_id] = security_version
        while len(self.app_security) > MAX_REMEMBERED:
            del self.app_security[next(iter(self.app_security))]

    def _trial(self, sha256: str) -> dict[str, int]:
        record = self.os_trials.setdefault(sha256, {"interrupted": 0, "failed": 0, "retry_at": 0})
        while len(self.os_trials) > MAX_REMEMBERED:
            del self.os_trials[next(iter(self.os_trials))]
        return record

    def note_interrupted(self, sha256: str, *, now: int) -> bool:
        """Record an interrupted trial; returns True when it now counts as a failure (blocklisted)."""
        record = self._trial(sha256)
        record["interrupted"] = record.get("interrupted", 0) + 1
        if record["interrupted"] < MAX_INTERRUPTED_TRIALS:
            return False
        self.note_failed(sha256, now=now)
        return True

    def note_failed(self, sha256: str, *, now: int) -> int:
        """Record a failed trial and blocklist the image; returns when it may be tried again (0: never)."""
        record = self._trial(sha256)
        record["interrupted"] = 0
        record["failed"] = failed = record.get("failed", 0) + 1
        retry_at = now + FAILED_RETRY_BACKOFF_S * 2 ** (failed - 1) if failed <= MAX_FAILED_RETRIES else 0
        record["retry_at"] = retry_at
        self.mark_bad_os(sha256)
        return retry_at

    def note_confirmed(self, sha256: str) -> None:
        """A trial of the image confirmed: forget its record."""
        self.os_trials.pop(sha256, None)

    def release_due(self, *, now: int) -> list[str]:
        """Lift the blocklisting of images whose retry time has come; return them."""
        due = [
            sha
            for sha in self.bad_os
            if 0 < self.os_trials.get(sha, {}).get("retry_at", 0) <= now  # no record: blocklisted for good
        ]
        for sha in due:
            self.bad_os.remove(sha)
        return due

    def apply_clear(self, clear_id: str, sha256: str) -> bool:
        """Apply a service clear of an image once (its record is forgotten); returns whether it lifted one."""
        if clear_id in self.applied_clears:
            return False
        self.applied_clears.append(clear_id)
        del self.applied_clears[:-MAX_REMEMBERED]
        self.os_trials.pop(sha256, None)
        if sha256 in self.bad_os:
            self.bad_os.remove(sha256)
            return True
        return False

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
        and isinstance(value.get("os_trials", {}), dict)
        and all(isinstance(r, dict) for r in value.get("os_trials", {}).values())
        and isinstance(value.get("applied_clears", []), list)
    )
    return state if valid else AgentState()


def save_agent_state(directory: Path, state: AgentState) -> None:
    """Write the state atomically."""
    data = json.dumps(asdict(state), sort_keys=True).encode() + b"\n"
    if len(data) > MAX_AGENT_STATE_BYTES:  # keep it readable: drop the summary first
        state.last_summary = None
        data = json.dumps(asdict(state), sort_keys=True).encode() + b"\n"
    atomic_write_bytes(directory / AGENT_STATE_FILE, data)
