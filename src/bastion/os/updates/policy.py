"""When the agent may install: the group's maintenance window and app deferral requests.

An app whose manifest grants ``SoftwareUpdateDeferral`` asks to defer updates by
writing ``update-deferral.json`` in its storage directory
(``BASTION_APP_STORAGE``)::

    {"until": 1767225600}          # seconds since the epoch, UTC

The agent honours the latest ``until`` among such requests, but defers at most
:data:`MAX_DEFERRAL` (24 h) in total, counted from the first check it deferred;
after that it installs whatever the apps ask. Requests from apps without the
capability are ignored. The window and deferrals are checked before anything is
downloaded, so a deferred device costs the service only the metadata check.

Example:
    >>> import datetime as dt
    >>> now = dt.datetime(2026, 1, 1, 1, 0, tzinfo=dt.UTC)
    >>> decide(now, window=None, requested_until=None, deferral_started=None).allowed
    True
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bastion.os.apps.store import InstalledApp
from bastion.os.updates.pointer import MaintenanceWindow

__all__ = ["DEFERRAL_FILE", "MAX_DEFERRAL", "MAX_DEFERRAL_FILE_BYTES", "Decision", "decide", "requested_deferral"]

DEFERRAL_FILE = "update-deferral.json"
#: The longest the apps together may hold back an update.
MAX_DEFERRAL = dt.timedelta(hours=24)
#: Bound on a deferral request file.
MAX_DEFERRAL_FILE_BYTES = 256
_MAX_EPOCH = 2**40


@dataclass(frozen=True)
class Decision:
    """Whether the agent may install now.

    Attributes:
        allowed: install now.
        reason: ``""``, ``"maintenance_window"`` or ``"deferred"``.
        retry_at: when to look again if not allowed.
        deferral_started: the start of the current deferral (to persist), or ``None``.
    """

    allowed: bool
    reason: str = ""
    retry_at: dt.datetime | None = None
    deferral_started: dt.datetime | None = None


def _read_request(path: Path) -> dt.datetime | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_DEFERRAL_FILE_BYTES + 1)
        if len(data) > MAX_DEFERRAL_FILE_BYTES:
            return None
        value = json.loads(data)
    except (OSError, ValueError):
        return None
    until = value.get("until") if isinstance(value, dict) else None
    if isinstance(until, bool) or not isinstance(until, int | float) or not 0 < until < _MAX_EPOCH:
        return None
    return dt.datetime.fromtimestamp(until, dt.UTC)


def requested_deferral(apps: Iterable[InstalledApp], storage_dir: Path) -> tuple[dt.datetime, list[str]] | None:
    """The latest deferral requested by apps that hold ``SoftwareUpdateDeferral``.

    Returns:
        ``(until, component ids that asked)``, or ``None`` if no entitled app asks.
    """
    latest: dt.datetime | None = None
    askers: list[str] = []
    for app in apps:
        if not app.manifest.capabilities.software_update_deferral:
            continue
        until = _read_request(storage_dir / app.component_id / DEFERRAL_FILE)
        if until is not None:
            askers.append(app.component_id)
            latest = until if latest is None else max(latest, until)
    return None if latest is None else (latest, askers)


def decide(
    now: dt.datetime,
    *,
    window: MaintenanceWindow | None,
    requested_until: dt.datetime | None,
    deferral_started: dt.datetime | None,
) -> Decision:
    """Apply the maintenance window, then the (capped) deferral.

    Args:
        now: the current time.
        window: the group's maintenance window; ``None`` = any time.
        requested_until: the latest deferral the apps ask for, if any.
        deferral_started: when the current deferral began (persisted by the agent).
    """
    if window is not None and not window.is_open(now):
        return Decision(False, "maintenance_window", window.next_open(now), deferral_started)
    if requested_until is None or requested_until <= now:
        return Decision(True)
    started = deferral_started or now
    cap = started + MAX_DEFERRAL
    if now >= cap:
        return Decision(True)  # the 24 h are used up: the update goes ahead
    return Decision(False, "deferred", min(requested_until, cap), started)
