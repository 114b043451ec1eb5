"""Every bound and retention period of the error-report slice, by name, and how endpoints find them.

The app reads :class:`ErrorReportSettings` from ``app.state.error_report_settings``
(set from the environment at start-up), else the defaults.

Environment:
    ``BASTION_ERROR_EVENT_RETENTION_DAYS``: raw events are rolled up into daily counts after this.
    ``BASTION_ERROR_BATCH_RETENTION_DAYS``: batch IDs kept for replay detection.
    ``BASTION_ERROR_DAILY_RETENTION_DAYS``: daily counts kept.
    ``BASTION_ERROR_MAX_BUCKETS_PER_TENANT``: buckets a tenant may have; past it new
    fingerprints share the tenant's overflow bucket (:mod:`~bastion.service.errorreports.bucket_cap`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request

from bastion.service.errors import ConfigError

__all__ = [
    "DEFAULT_ERROR_REPORT_SETTINGS",
    "MAX_BATCH_BYTES",
    "ErrorReportSettings",
    "ErrorReportSettingsDep",
    "get_error_report_settings",
]

#: A whole error-report batch (COSE_Sign1), the wire contract's ``MAX_BATCH_BYTES``.
MAX_BATCH_BYTES = 64 * 1024
#: Default retention of raw events (then rolled up per day).
DEFAULT_EVENT_RETENTION_DAYS = 30
#: Default retention of accepted batch IDs; must cover the ``iat`` window, so a replay is always seen.
DEFAULT_BATCH_RETENTION_DAYS = 31
#: Default retention of the daily roll-ups.
DEFAULT_DAILY_RETENTION_DAYS = 400
#: Default cap on a tenant's buckets (then one overflow bucket per tenant).
DEFAULT_MAX_BUCKETS_PER_TENANT = 10_000


@dataclass(frozen=True)
class ErrorReportSettings:
    """Size, count, time and retention bounds of error reports."""

    #: A batch body (COSE_Sign1).
    max_batch_bytes: int = MAX_BATCH_BYTES
    #: Records in one batch.
    max_records: int = 128
    #: Installed components in one batch.
    max_installed: int = 64
    #: One record's ``count`` and a batch's ``dropped`` (a larger number is a broken or hostile device).
    max_count: int = 1_000_000_000
    #: A batch's ``iat`` may be at most this old (a device offline for weeks still delivers) ...
    max_batch_age: dt.timedelta = dt.timedelta(days=30)
    #: ... and at most this far ahead of the service clock.
    max_clock_ahead: dt.timedelta = dt.timedelta(minutes=10)
    #: Raw events older than this roll up into daily counts.
    event_retention: dt.timedelta = dt.timedelta(days=DEFAULT_EVENT_RETENTION_DAYS)
    #: Batch IDs older than this are forgotten (longer than ``max_batch_age``).
    batch_retention: dt.timedelta = dt.timedelta(days=DEFAULT_BATCH_RETENTION_DAYS)
    #: Daily roll-ups older than this are deleted.
    daily_retention: dt.timedelta = dt.timedelta(days=DEFAULT_DAILY_RETENTION_DAYS)
    #: Rows one retention pass handles per table (the periodic task catches up over passes).
    prune_batch_rows: int = 10_000
    #: Buckets per page of ``list``.
    max_page_rows: int = 200
    #: Devices and recent events shown by ``show``.
    show_sample_rows: int = 20
    #: Rows one download streams at most.
    max_download_rows: int = 100_000
    #: Seconds between retention passes of the periodic task.
    prune_interval_s: float = 3600.0
    #: Buckets one tenant may have; a new fingerprint past it is counted in the tenant's overflow bucket.
    max_buckets_per_tenant: int = DEFAULT_MAX_BUCKETS_PER_TENANT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ErrorReportSettings:
        """The defaults, with the retention periods (whole days, >= 1) and bucket cap (>= 1) the environment sets."""
        overrides: dict[str, dt.timedelta] = {}
        for name, field in (
            ("BASTION_ERROR_EVENT_RETENTION_DAYS", "event_retention"),
            ("BASTION_ERROR_BATCH_RETENTION_DAYS", "batch_retention"),
            ("BASTION_ERROR_DAILY_RETENTION_DAYS", "daily_retention"),
        ):
            raw = env.get(name, "").strip()
            if not raw:
                continue
            if not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"{name} must be a whole number of days >= 1")
            overrides[field] = dt.timedelta(days=int(raw))
        settings = cls(
            event_retention=overrides.get("event_retention", cls.event_retention),
            batch_retention=overrides.get("batch_retention", cls.batch_retention),
            daily_retention=overrides.get("daily_retention", cls.daily_retention),
            max_buckets_per_tenant=_positive(env, "BASTION_ERROR_MAX_BUCKETS_PER_TENANT", cls.max_buckets_per_tenant),
        )
        if settings.batch_retention <= settings.max_batch_age:
            settings = replace(settings, batch_retention=settings.max_batch_age + dt.timedelta(days=1))
        return settings


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number >= 1")
    return int(raw)


DEFAULT_ERROR_REPORT_SETTINGS = ErrorReportSettings()


async def get_error_report_settings(request: Request) -> ErrorReportSettings:
    """The app's error-report settings (``app.state.error_report_settings``, else the defaults; no I/O)."""
    settings = getattr(request.app.state, "error_report_settings", None)
    return settings if isinstance(settings, ErrorReportSettings) else DEFAULT_ERROR_REPORT_SETTINGS


ErrorReportSettingsDep = Annotated[ErrorReportSettings, Depends(get_error_report_settings)]
