"""What the gate needs to know about a release's health, as an interface.

The real source is the module :mod:`bastion.service.errorreports.health` itself
(crash-free device rates and new buckets from the signed error reports): its two
functions have exactly these signatures, so the module is a :class:`HealthSource`
(mypy checks a module against a protocol) and nothing forwards the calls. Tests
may pass an in-memory object with the same two methods.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Annotated, Protocol

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from bastion.service.errorreports import health as _error_report_health

__all__ = ["HealthDep", "HealthSource", "ReleaseHealthView", "default_health", "get_health"]


class ReleaseHealthView(Protocol):
    """``errorreports.health.ReleaseHealth``: devices seen on a release, how many crashed, the crash-free rate."""

    @property
    def devices(self) -> int: ...

    @property
    def crashed_devices(self) -> int: ...

    @property
    def crash_free_rate(self) -> float | None: ...


class HealthSource(Protocol):
    """The two health questions of the gate (signatures of ``errorreports.health``)."""

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
    ) -> ReleaseHealthView:
        """Devices on the release in the window, and the crashed ones among them."""
        ...

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
        """Bucket ids first seen in this release at or after ``since`` (reported by ``device_ids``, if given)."""
        ...


def get_health(request: Request) -> HealthSource:
    """The app's health source (``app.state.rollout_health``, else the error-report health module)."""
    source = getattr(request.app.state, "rollout_health", None)
    return source if source is not None else default_health()


def default_health() -> HealthSource:
    """The real source: the module :mod:`bastion.service.errorreports.health`."""
    return _error_report_health


HealthDep = Annotated[HealthSource, Depends(get_health)]
