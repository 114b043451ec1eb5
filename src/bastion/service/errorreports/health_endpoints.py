"""HTTP endpoint: ``GET /fleet/health`` (the crash-free device rate per deployment, OS version or group)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from bastion.service.auth.deps import ReaderDep
from bastion.service.errorreports.health import fleet_health
from bastion.service.errors import InvalidRequest
from bastion.service.web import NowDep, SessionDep

__all__ = ["MAX_WINDOW", "FleetHealthOut", "FleetHealthRowOut", "parse_window", "router"]

router = APIRouter(tags=["fleet-health"])

#: The longest window one request may ask for (raw events are kept about this long).
MAX_WINDOW = dt.timedelta(days=31)
_WINDOW = re.compile(r"([1-9][0-9]{0,4})([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_window(text: str) -> dt.timedelta:
    """``30m``, ``24h``, ``7d`` → a timedelta (at most :data:`MAX_WINDOW`).

    Raises:
        InvalidRequest: ``invalid_window``.
    """
    match = _WINDOW.fullmatch(text.strip())
    window = dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}) if match else None
    if window is None or window > MAX_WINDOW:
        raise InvalidRequest(
            f"window must be a number and a unit (m, h or d), e.g. 24h, of at most {MAX_WINDOW.days}d",
            code="invalid_window",
        )
    return window


class FleetHealthRowOut(BaseModel):
    key: str
    label: str
    group_id: str | None
    releases: list[str]
    devices: int
    crashed_devices: int
    crash_free_rate: float | None


class FleetHealthOut(BaseModel):
    by: Literal["deployment", "os", "group"]
    window: str
    since: dt.datetime
    until: dt.datetime
    items: list[FleetHealthRowOut]


@router.get("/fleet/health")
def get_fleet_health(
    who: ReaderDep,
    session: SessionDep,
    now: NowDep,
    by: Annotated[Literal["deployment", "os", "group"], Query(description="one row per ...")] = "deployment",
    window: Annotated[str, Query(max_length=8, description="e.g. 30m, 24h, 7d")] = "24h",
) -> FleetHealthOut:
    """The crash-free device rate (devices seen, devices with a crash) over the window ending now (reader)."""
    since = now - parse_window(window)
    rows = fleet_health(session, who.tenant_id, by=by, since=since, until=now)
    return FleetHealthOut(
        by=by,
        window=window.strip(),
        since=since,
        until=now,
        items=[
            FleetHealthRowOut(
                key=r.key,
                label=r.label,
                group_id=r.group_id,
                releases=list(r.releases),
                devices=r.devices,
                crashed_devices=r.crashed_devices,
                crash_free_rate=r.crash_free_rate,
            )
            for r in rows
        ],
    )
