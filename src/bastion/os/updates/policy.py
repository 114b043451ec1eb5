"""When the agent may install: the group's maintenance window and the apps' deferral requests.

An app whose manifest grants ``SoftwareUpdateDeferral`` asks to defer updates
through applibs (``sysevent.defer(minutes)``, at most 24 h per request; see
:mod:`bastion.os.appservices.sysevent`, which keeps the requests). Apps with
``SystemEventNotifications`` hear ``update_pending`` first, with the deferral
still allowed.

The agent honours the latest request among the apps that hold the capability,
but defers at most :data:`MAX_DEFERRAL` (24 h) in total, counted from the first
check it deferred; after that it installs whatever the apps ask. Requests of
apps without the capability (or no longer installed) are ignored. The window
and deferrals are checked before anything is downloaded, so a deferred device
costs the service only the metadata check. Everything here is pure: the time
is a parameter.

Example:
    >>> import datetime as dt
    >>> now = dt.datetime(2026, 1, 1, 1, 0, tzinfo=dt.UTC)
    >>> decide(now, window=None, requested_until=None, deferral_started=None).allowed
    True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bastion.os.apps.store import InstalledApp
from bastion.os.updates.pointer import MaintenanceWindow

__all__ = ["MAX_DEFERRAL", "Decision", "decide", "remaining_deferral", "requested_deferral"]

#: The longest the apps together may hold back an update.
MAX_DEFERRAL = dt.timedelta(hours=24)


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


def requested_deferral(
    apps: Iterable[InstalledApp], requests: Mapping[str, dt.datetime], now: dt.datetime
) -> tuple[dt.datetime, list[str]] | None:
    """The latest deferral still in force among installed apps that hold ``SoftwareUpdateDeferral``.

    Args:
        apps: the installed apps.
        requests: component ID -> the time its app asked to defer to.
        now: the current time (requests that ended are ignored).

    Returns:
        ``(until, component ids that asked)``, or ``None`` if no entitled app asks.
    """
    latest: dt.datetime | None = None
    askers: list[str] = []
    for app in apps:
        if not app.manifest.capabilities.software_update_deferral:
            continue
        until = requests.get(app.component_id)
        if until is not None and until > now:
            askers.append(app.component_id)
            latest = until if latest is None else max(latest, until)
    return None if latest is None else (latest, askers)


def remaining_deferral(now: dt.datetime, deferral_started: dt.datetime | None) -> dt.timedelta:
    """How much of the 24 h cap is left at ``now``."""
    if deferral_started is None:
        return MAX_DEFERRAL
    return max(deferral_started + MAX_DEFERRAL - now, dt.timedelta(0))


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
