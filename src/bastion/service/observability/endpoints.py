"""``GET /healthz`` (alive), ``GET /readyz`` (ready to serve, or 503 naming what is not) and ``GET /metrics``.

``/metrics`` is on unless ``BASTION_METRICS=off``; with ``BASTION_METRICS_TOKEN``
set it wants ``Authorization: Bearer <that token>``, otherwise it is open like
``/healthz`` (operators scrape from a private network; it carries counts by
route template and error code, never an id or a secret). ADR 0019.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from bastion.service import metrics
from bastion.service.observability.readiness import readiness, tuf_timestamps
from bastion.service.web import error_response

__all__ = ["ObservabilitySettings", "router"]

router = APIRouter()


@dataclass(frozen=True)
class ObservabilitySettings:
    """Whether ``/metrics`` is served, and the bearer token it wants (``None``: no token)."""

    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ObservabilitySettings:
        """``BASTION_METRICS`` (``on``/``off``, default on) and ``BASTION_METRICS_TOKEN``."""
        env = os.environ if env is None else env
        enabled = env.get("BASTION_METRICS", "on").strip().lower() not in {"off", "0", "false", "no"}
        return cls(metrics_enabled=enabled, metrics_token=env.get("BASTION_METRICS_TOKEN") or None)


def _settings(request: Request) -> ObservabilitySettings:
    found = getattr(request.app.state, "observability", None)
    return found if isinstance(found, ObservabilitySettings) else ObservabilitySettings()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive (no I/O)."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """200 when every check passes, else 503 with each check's result."""
    state = request.app.state
    report = await readiness(state.settings, state.engine, now=state.clock())
    body: dict[str, Any] = {"status": "ready" if report.ok else "not_ready", "checks": report.checks}
    if not report.ok:
        body["failed"] = report.failed
    return JSONResponse(body, status_code=200 if report.ok else 503, headers={"cache-control": "no-store"})


@router.get("/metrics", include_in_schema=False)
def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition of every worker's metrics, plus the TUF metadata gauges."""
    settings = _settings(request)
    if not settings.metrics_enabled:
        return error_response(404, "not_found", "metrics are off on this service (BASTION_METRICS=off)")
    if settings.metrics_token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.metrics_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return error_response(
                401, "unauthenticated", "send the metrics token as a bearer token", {"WWW-Authenticate": "Bearer"}
            )
    state = request.app.state
    now = state.clock()

    def gauges() -> Iterator[tuple[str, str, float]]:
        stamps = tuf_timestamps(state.settings)
        yield "bastion_tuf_groups", "Device groups with a TUF repository.", float(len(stamps))
        if stamps:
            ages = [metrics.utc_age_seconds(mtime, now) for _g, mtime, _e in stamps]
            yield "bastion_tuf_timestamp_age_seconds_max", "Age of the oldest group timestamp.json.", max(ages)
            left = [(exp - now).total_seconds() for _g, _m, exp in stamps if exp is not None]
            if left:
                yield (
                    "bastion_tuf_timestamp_expiry_seconds_min",
                    "Seconds until the soonest group timestamp expires.",
                    min(left),
                )

    return Response(metrics.render(gauges), media_type=metrics.CONTENT_TYPE)
