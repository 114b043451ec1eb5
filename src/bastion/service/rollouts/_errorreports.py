"""The gate's health source over the error reports (:mod:`bastion.service.errorreports.health`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy.orm import Session

from bastion.service.errorreports import health

__all__ = ["ErrorReportsHealth"]


class ErrorReportsHealth:
    """Crash-free device rates and new buckets from the signed error reports (the real source)."""

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
    ) -> health.ReleaseHealth:
        return health.release_health(
            session,
            tenant_id,
            component_id=component_id,
            version=version,
            since=since,
            until=until,
            group_id=group_id,
            device_ids=device_ids,
        )

    def new_buckets(
        self,
        session: Session,
        tenant_id: str,
        *,
        component_id: str,
        version: str,
        since: dt.datetime,
        device_ids: Collection[str] | None = None,
    ) -> list[str]:
        return health.new_buckets(
            session, tenant_id, component_id=component_id, version=version, since=since, device_ids=device_ids
        )
