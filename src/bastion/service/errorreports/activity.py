"""Release activity: which devices ran which release on which day (the crash-free population).

Written for every accepted error-report batch and every accepted status report:
one row per installed app and one with ``component_id ""`` for the OS. An upsert
per row: a device seen again on the same day only moves ``last_seen``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bastion.service.models import DeviceReleaseActivity

__all__ = ["OS_COMPONENT", "ActivityEntry", "record_activities", "record_activity"]

#: The ``component_id`` of the OS release in activity rows and OS-wide records.
OS_COMPONENT = ""


@dataclass(frozen=True)
class ActivityEntry:
    """A device seen running ``os_version`` and ``installed`` apps at ``seen_at``."""

    tenant_id: str
    device_id: str
    group_id: str | None
    os_version: str
    installed: tuple[tuple[str, str], ...]
    seen_at: dt.datetime


def record_activity(
    session: Session,
    *,
    tenant_id: str,
    device_id: str,
    group_id: str | None,
    os_version: str,
    installed: Iterable[tuple[str, str]],
    seen_at: dt.datetime,
) -> None:
    """Upsert the device's activity rows for ``seen_at``'s day (in the caller's transaction)."""
    entry = ActivityEntry(tenant_id, device_id, group_id, os_version, tuple(installed), seen_at)
    record_activities(session, [entry])


def record_activities(session: Session, entries: Iterable[ActivityEntry]) -> None:
    """Upsert the activity rows of ``entries`` in one executemany (in the caller's transaction).

    Rows with the same key (one device twice in a group commit) are merged first, keeping
    the newest ``last_seen`` and its group: one statement never updates a row twice.
    """
    rows: dict[tuple[str, str, str, str, dt.date], dict[str, Any]] = {}
    for entry in entries:
        releases = {(OS_COMPONENT, entry.os_version)} | {(c, v) for c, v in entry.installed if c != OS_COMPONENT}
        day = entry.seen_at.date()
        for component, version in releases:
            key = (entry.tenant_id, entry.device_id, component, version, day)
            row = rows.get(key)
            if row is None:
                rows[key] = {
                    "tenant_id": entry.tenant_id,
                    "device_id": entry.device_id,
                    "component_id": component,
                    "version": version,
                    "day": day,
                    "group_id": entry.group_id,
                    "first_seen": entry.seen_at,
                    "last_seen": entry.seen_at,
                }
            else:
                row["first_seen"] = min(row["first_seen"], entry.seen_at)
                if entry.seen_at >= row["last_seen"]:
                    row["last_seen"], row["group_id"] = entry.seen_at, entry.group_id
    if rows:
        session.connection().execute(_upsert(session.get_bind().dialect.name), [rows[k] for k in sorted(rows)])


#: The upsert per dialect, built once (an ON CONFLICT with ``excluded`` costs milliseconds to build).
_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """INSERT the rows (executemany), or move ``last_seen`` forward and take the current group."""
    found = _UPSERTS.get(dialect)
    if found is not None:
        return found
    table = DeviceReleaseActivity.__table__.c
    if dialect == "postgresql":
        pg = postgresql.insert(DeviceReleaseActivity)
        found = pg.on_conflict_do_update(
            index_elements=["tenant_id", "device_id", "component_id", "version", "day"],
            set_={"last_seen": func.greatest(table.last_seen, pg.excluded.last_seen), "group_id": pg.excluded.group_id},
        )
    else:
        lite = sqlite.insert(DeviceReleaseActivity)
        found = lite.on_conflict_do_update(
            index_elements=["tenant_id", "device_id", "component_id", "version", "day"],
            set_={"last_seen": func.max(table.last_seen, lite.excluded.last_seen), "group_id": lite.excluded.group_id},
        )
    _UPSERTS[dialect] = found
    return found
