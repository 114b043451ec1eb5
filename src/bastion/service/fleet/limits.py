"""Every bound the fleet slices apply, by name, and how endpoints find them.

The app uses :data:`DEFAULT_FLEET_LIMITS`; a deployment or a test may put another
:class:`FleetLimits` on ``app.state.fleet_limits``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

__all__ = ["DEFAULT_FLEET_LIMITS", "FleetLimits", "FleetLimitsDep", "get_fleet_limits"]


@dataclass(frozen=True)
class FleetLimits:
    """Size, count and time bounds of the fleet API."""

    #: An uploaded app image package.
    max_app_image_bytes: int = 64 * 1024 * 1024
    #: Images in one deployment.
    max_deployment_images: int = 32
    #: A device status report (COSE_Sign1), docs/updates.md.
    max_status_bytes: int = 16 * 1024
    #: Events in one device status report.
    max_status_events: int = 64
    #: Installed components listed in one report.
    max_status_installed: int = 64
    #: Characters kept of an event's ``detail``.
    max_event_detail_chars: int = 500
    #: A report's ``iat`` may differ from the service clock by at most this much.
    status_clock_skew: dt.timedelta = dt.timedelta(minutes=5)
    #: Update events shown with a device, newest first.
    update_history_rows: int = 50
    #: Devices listed per deployment in ``deployment show``.
    deployment_device_rows: int = 1000
    #: Older OS images of a feed that get a delta to the newest one.
    max_delta_sources: int = 3
    #: A registered public key PEM.
    max_public_key_pem_bytes: int = 8 * 1024


DEFAULT_FLEET_LIMITS = FleetLimits()


def get_fleet_limits(request: Request) -> FleetLimits:
    """The app's fleet limits (``app.state.fleet_limits``, else the defaults)."""
    limits = getattr(request.app.state, "fleet_limits", None)
    return limits if isinstance(limits, FleetLimits) else DEFAULT_FLEET_LIMITS


FleetLimitsDep = Annotated[FleetLimits, Depends(get_fleet_limits)]
