"""Release activity: which devices ran which release on which day (the crash-free population).

Written for every accepted error-report batch and every accepted status report:
one row per installed app and one with ``component_id ""`` for the OS. An upsert
per row: a device seen again on the same day only moves ``last_seen``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bastion.service.models import DeviceReleaseActivity

__all__ = ["OS_COMPONENT", "record_activity"]

#: The ``component_id`` of the OS release in activity rows and OS-wide records.
OS_COMPONENT = ""


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
    releases = {(OS_COMPONENT, os_version)} | {(c, v) for c, v in installed if c != OS_COMPONENT}
    rows = [
        {
            "tenant_id": tenant_id,
            "device_id": device_id,
            "component_id": component,
            "version": version,
            "day": seen_at.date(),
            "group_id": group_id,
            "first_seen": seen_at,
            "last_seen": seen_at,
        }
        for component, version in sorted(releases)
    ]
    if not rows:  # pragma: no cover - the OS row is always there
        return
    session.connection().execute(_upsert(session.get_bind().dialect.name), rows)


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
