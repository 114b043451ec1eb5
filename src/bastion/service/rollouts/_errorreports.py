"""The gate's health source over the error reports (:mod:`bastion.service.errorreports.health`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy.orm import Session

__all__ = ["ErrorReportsHealth"]


@dataclass(frozen=True)
class _NoData:
    devices: int = 0
    crashed_devices: int = 0
    crash_free_rate: float | None = None


class ErrorReportsHealth:
    """Crash-free rates and new buckets from the signed error reports.

    Until the fleet-health module is merged this answers "no data" (no rule fires
    for lack of a sample); it then calls ``errorreports.health`` directly.
    """

    def release_health(
        self,
        session: Session,
        tenant_id: str,
        *,
        component_id: str,
        version: str,
        since: dt.datetime,
        until: dt.datetime,
        group_id: str | None = None,
        device_ids: Collection[str] | None = None,
    ) -> _NoData:
        return _NoData()

    def new_buckets(
        self, session: Session, tenant_id: str, *, component_id: str, version: str, since: dt.datetime
    ) -> list[str]:
        return []
