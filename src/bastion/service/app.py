"""The Security Service ASGI application.

Example:
    >>> from bastion.service.config import Settings
    >>> app = create_app(Settings.from_env())  # doctest: +SKIP

``uvicorn --factory bastion.service.app:create_app_from_env`` serves it with
settings from the environment (what ``bastion service run`` does).

The device endpoints (``POST /api/v1/attestation/challenge`` and ``POST
/api/v1/attestation``) are the hot path: :class:`ServiceApp` dispatches those
two exact paths to hand-written ASGI handlers
(:mod:`bastion.service.attestation.fastpath`) before FastAPI's middleware and
routing, and merges their documentation into the OpenAPI schema. Every other
request goes through FastAPI as usual.

Before either, every request passes the guards of :mod:`bastion.service.guard`
(header count and size: 431; per-client rate limit on the device endpoints:
429). Every error, FastAPI's and Starlette's own included (404, 405, 422,
body parse, an unexpected exception), has the one shape ``{"error", "detail"}``,
and :mod:`bastion.service.openapi` declares it on every operation.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.service import errors
from bastion.service.appimages.endpoints import APP_UPLOAD_PATH
from bastion.service.appimages.endpoints import router as appimages_router
from bastion.service.appraisal.endpoints import router as appraisal_router
from bastion.service.attestation.fastpath import OPENAPI_PATHS as DEVICE_OPENAPI_PATHS
from bastion.service.attestation.fastpath import DeviceEndpoints
from bastion.service.audit.endpoints import router as audit_router
from bastion.service.auth.endpoints import router as auth_router
from bastion.service.auth.limits import AuthLimits
from bastion.service.ca.endpoints import router as ca_router
from bastion.service.ca.refresh import CRL_REFRESH_INTERVAL_S, crl_refresher
from bastion.service.capabilities.endpoints import router as capabilities_router
from bastion.service.config import HttpLimits, Settings
from bastion.service.console import console_router
from bastion.service.db import create_engine_for, make_sessionmaker, migrate
from bastion.service.deployments.endpoints import router as deployments_router
from bastion.service.devices.endpoints import router as devices_router
from bastion.service.devicestatus.endpoints import router as devicestatus_router
from bastion.service.eligibility.endpoints import Eligibility
from bastion.service.eligibility.endpoints import router as eligibility_router
from bastion.service.eligibility.service import CredentialLimits
from bastion.service.errorreports.endpoints import router as errorreports_router
from bastion.service.errorreports.health_endpoints import router as fleet_health_router
from bastion.service.errorreports.log_endpoints import router as device_logs_router
from bastion.service.errorreports.retention import retention_runner
from bastion.service.fleet.endpoints import router as fleet_router
from bastion.service.fleet.targets import TufPublisher, reconcile_groups
from bastion.service.guard import RateLimiter, RefusalLog, check_headers, client_key, send_error
from bastion.service.models import DeviceGroup
from bastion.service.observability.endpoints import ObservabilitySettings
from bastion.service.observability.endpoints import router as observability_router
from bastion.service.observability.middleware import Observer
from bastion.service.openapi import MethodIndex, authenticated_operations, complete_schema
from bastion.service.osimages.endpoints import UPLOAD_PATH
from bastion.service.osimages.endpoints import router as osimages_router
from bastion.service.rollouts.endpoints import router as rollouts_router
from bastion.service.rollouts.gate import gate_interval_from_env, rollout_gate
from bastion.service.rollouts.health import default_health
from bastion.service.tuf.endpoints import TufStaticMiddleware
from bastion.service.tuf.refresh import TUF_REFRESH_INTERVAL_S, tuf_refresher
from bastion.service.web import BodyLimitMiddleware, error_response, utc_now

__all__ = ["API_PREFIX", "create_app", "create_app_from_env", "status_for"]

API_PREFIX = "/api/v1"

_log = logging.getLogger(__name__)

#: Bound on the text of a validation error's detail.
_MAX_VALIDATION_DETAIL = 1000

#: Error codes of the HTTP statuses Starlette and FastAPI raise themselves.
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}

#: Domain error class -> HTTP status. The most specific class in an error's MRO wins.
_STATUS: dict[type[errors.ServiceError], int] = {
    errors.InvalidRequest: 400,
    errors.InvalidDeviceId: 422,
    errors.PayloadTooLarge: 413,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.SealedKeyError: 500,
    errors.ConfigError: 500,
    errors.CrlTooLarge: 503,
}


def status_for(exc: errors.ServiceError) -> int:
    """The HTTP status for a domain error."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, errors.ServiceError):  # pragma: no cover - registered for ServiceError only
        raise exc
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        # Internal failures keep their detail in the server log, not the response.
        return error_response(status, exc.code, "the service could not complete this request")
    return error_response(status, exc.code, exc.detail, headers)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    problems = []
    for err in getattr(exc, "errors", list)()[:5]:
        if err.get("type") == "json_invalid":
            problems.append("the body is not valid JSON; send the JSON object the operation documents")
            continue
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    detail = "; ".join(problems)[:_MAX_VALIDATION_DETAIL] or "the request is not valid"
    return error_response(422, "invalid_request", detail)


#: Details Starlette and FastAPI write themselves (besides the status phrase): ours say what to do.
_FRAMEWORK_DETAILS = frozenset({"There was an error parsing the body"})


def _is_framework_detail(status: int, detail: str) -> bool:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return status == 405 or detail == phrase or detail in _FRAMEWORK_DETAILS


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own HTTP errors (no route, wrong method, unparseable body) in the API's shape."""
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    if isinstance(exc.detail, str) and exc.detail and not _is_framework_detail(status, exc.detail):
        # A route's own HTTPException: its detail says more than ours would.
        detail = exc.detail[:_MAX_VALIDATION_DETAIL]
    elif status == 404:
        detail = "no such route; the API is under /api/v1 and documented at /openapi.json"
    elif status == 405:
        app = request.app
        documented = app.method_index().allowed(request.url.path) if isinstance(app, ServiceApp) else []
        allowed = ", ".join(documented) or (headers or {}).get("Allow") or ""
        if allowed:
            headers = {"Allow": allowed}
        detail = f"method {request.method[:16]} is not allowed here; use {allowed or 'a documented method'}"
    elif status == 400:
        detail = "the request body could not be parsed; send the JSON object the operation documents"
    else:
        detail = exc.detail if isinstance(exc.detail, str) else "the request cannot be served"
    return error_response(status, code, detail, headers)


def _out_of_range(_request: Request, exc: Exception) -> JSONResponse:
    """A number the database cannot hold (``offset=2**63``): the caller's input, so a 422, not a 500.

    Routes bound their numbers (``le=``); this is the net under any that does not.
    """
    _log.info("request value out of the database's range: %s", type(exc).__name__)
    return error_response(
        422, "invalid_request", "a number in the request is out of range; use the bounds the operation documents"
    )


def _reconcile_at_start(app: FastAPI, engine: Engine, settings: Settings) -> None:
    """Bring every group's TUF repository up to the committed database (ADR 0018), if it has a schema."""
    publisher = getattr(app.state, "tuf_publisher", None) or TufPublisher()
    if inspect(engine).has_table(DeviceGroup.__tablename__):  # an unmigrated database has no groups yet
        reconcile_groups(engine, settings, now=app.state.clock(), publisher=publisher)
    else:
        _log.warning("the database has no schema (migrate_on_startup is off): TUF repositories not reconciled")


#: Seconds a client is told to wait when the database is busy (``Retry-After``).
DATABASE_BUSY_RETRY_AFTER_S = 5


def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """The database is busy (SQLite's write lock timed out) or unreachable: 503, retry later; nothing was stored.

    The request's transaction was rolled back, so a retry is safe (device batches are idempotent).
    """
    _log.warning("database unavailable while serving a request: %s", type(getattr(exc, "orig", exc)).__name__)
    return error_response(
        503,
        "database_unavailable",
        "the service's database is busy or unreachable; retry later",
        {"Retry-After": str(DATABASE_BUSY_RETRY_AFTER_S)},
    )


def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback on the server, the API's shape (and no internals) for the client."""
    _log.error("unhandled error while serving a request", exc_info=exc)
    return error_response(500, "internal_error", "the service could not complete this request")


class ServiceApp(FastAPI):
    """FastAPI, plus raw ASGI handlers for a few exact hot paths, dispatched first.

    A request for one of :attr:`fast_paths` skips FastAPI's middleware stack
    and router; the handler applies its own bounds and writes the API's error
    shape. Lifespan and every other request go to FastAPI.
    """

    fast_paths: dict[str, ASGIApp]
    extra_openapi_paths: dict[str, dict[str, Any]]
    http_limits: HttpLimits
    rate_limiter: RateLimiter | None
    refusals: RefusalLog
    monotonic: Callable[[], float]
    observer: Observer | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Observe (request id, metrics, access log: ADR 0019), then :meth:`dispatch`."""
        if scope["type"] == "http" and self.observer is not None:
            await self.observer(scope, receive, send, self.dispatch)
        else:
            await self.dispatch(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard (header bounds, rate limit), then dispatch: an exact fast path, else FastAPI."""
        if scope["type"] == "http":
            problem = check_headers(scope, self.http_limits)
            if problem is not None:
                self.refusals.note("headers_too_large", client_key(scope), now=self.monotonic())
                await send_error(send, 431, "headers_too_large", problem, [(b"connection", b"close")])
                return
            if self.rate_limiter is not None and scope["path"].startswith(self.http_limits.rate_limited_prefixes):
                client = client_key(scope)
                if client not in self.http_limits.rate_limit_exempt:
                    now = self.monotonic()
                    wait = self.rate_limiter.admit(client, now=now)
                    if wait > 0:
                        self.refusals.note("rate_limited", client, now=now)
                        seconds = self.rate_limiter.retry_after(wait)
                        detail = f"too many requests from this client; retry after {seconds} s"
                        await send_error(send, 429, "rate_limited", detail, [(b"retry-after", b"%d" % seconds)])
                        return
            handler = self.fast_paths.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def method_index(self) -> MethodIndex:
        """The documented methods per path (for the ``Allow`` header of a 405), built once."""
        index: MethodIndex | None = getattr(self, "_method_index", None)
        if index is None:
            index = MethodIndex(self.openapi())
            self._method_index = index
        return index

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, with the fast paths' documentation merged in."""
        if self.openapi_schema is None:
            schema = super().openapi()
            schema.setdefault("paths", {}).update(self.extra_openapi_paths)
            self.openapi_schema = complete_schema(
                schema,
                authenticated=authenticated_operations(self.routes),
                rate_limited_prefixes=self.http_limits.rate_limited_prefixes if self.rate_limiter else (),
            )
        return self.openapi_schema


@asynccontextmanager
async def _heap_frozen(enabled: bool) -> AsyncIterator[None]:
    """Once started, collect and ``gc.freeze()`` the heap (when ``enabled``).

    The imports, routes, schemas and engine are there for good: the collector's passes
    then walk only what requests make (~1 ms of ~11 of service CPU per error-report batch).
    """
    if enabled:
        gc.collect()
        gc.freeze()
    yield


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    migrate_on_startup: bool = True,
    tuf_refresh_interval_s: float | None = None,
    crl_refresh_interval_s: float | None = None,
    retention_interval_enabled: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
    rollout_gate_interval_s: float | None = None,
    freeze_heap_at_start: bool = False,
) -> ServiceApp:
    """Build the app: one engine and session factory per app, created in its lifespan.

    Args:
        settings: resolved settings.
        clock: returns the current UTC time; defaults to the system clock.
        migrate_on_startup: run ``alembic upgrade head`` before serving.
        tuf_refresh_interval_s: period of the TUF refresh task; ``None`` (tests) disables it.
        crl_refresh_interval_s: period of the CRL refresh task; ``None`` (tests) disables it.
        retention_interval_enabled: run the error-report retention task (period in the settings; off in tests).
        monotonic: the clock of the rate limiter (seconds; tests pass a fake).
        rollout_gate_interval_s: period of the staged-rollout gate; ``None`` (tests) disables it.
        freeze_heap_at_start: once started, collect and then ``gc.freeze()`` the heap, so the cyclic
            collector no longer walks the app's start-up objects on every full pass (a server
            process; not tests, which build many apps in one process).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate_on_startup:
            migrate(settings.database_url)
        engine = create_engine_for(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        # Commit first, then publish (ADR 0018): bring every group's TUF repository up to the database.
        _reconcile_at_start(app, engine, settings)
        try:
            async with (
                tuf_refresher(settings, app.state.clock, tuf_refresh_interval_s),
                crl_refresher(app.state.sessionmaker, settings.master_key, app.state.clock, crl_refresh_interval_s),
                rollout_gate(
                    lambda: app.state.sessionmaker,
                    settings,
                    clock=app.state.clock,
                    publisher=lambda: getattr(app.state, "tuf_publisher", None) or TufPublisher(),
                    health=lambda: getattr(app.state, "rollout_health", None) or default_health(),
                    interval_s=rollout_gate_interval_s,
                ),
                retention_runner(
                    app.state.sessionmaker,
                    settings.error_reports,
                    app.state.clock,
                    settings.error_reports.prune_interval_s if retention_interval_enabled else None,
                ),
                _heap_frozen(freeze_heap_at_start),
            ):
                yield
        finally:
            engine.dispose()

    app = ServiceApp(
        title="Bastion Security Service",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock or utc_now
    device_endpoints = DeviceEndpoints(app.state)
    # The CA rotation endpoint drops this process's cached signing CA (ADR 0012).
    app.state.attestation_caches = device_endpoints.caches
    app.fast_paths = {API_PREFIX + path: handler for path, handler in device_endpoints.paths.items()}
    app.extra_openapi_paths = {API_PREFIX + path: item for path, item in DEVICE_OPENAPI_PATHS.items()}
    limits = settings.http
    app.http_limits = limits
    app.monotonic = monotonic
    app.refusals = RefusalLog()
    app.rate_limiter = (
        RateLimiter(
            rate_per_s=limits.device_rate_per_s,
            burst=limits.device_rate_burst,
            max_clients=limits.rate_limit_max_clients,
        )
        if limits.rate_limited
        else None
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.limits.max_body_bytes,
        # The error-report endpoint bounds its own body (report_too_large, recorded).
        streaming_prefixes=(
            API_PREFIX + UPLOAD_PATH,
            API_PREFIX + APP_UPLOAD_PATH,
            API_PREFIX + "/device/error-reports",
        ),
    )
    app.add_exception_handler(errors.ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(DataError, _out_of_range)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)

    # /healthz, /readyz, /metrics (ADR 0019); every request observed.
    app.include_router(observability_router)
    app.state.observability = ObservabilitySettings()
    app.observer = Observer(exact_paths=app.fast_paths)
    for router in (auth_router, ca_router, devices_router, osimages_router, audit_router):
        app.include_router(router, prefix=API_PREFIX)
    for router in (fleet_router, appimages_router, deployments_router, devicestatus_router, capabilities_router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(appraisal_router, prefix=API_PREFIX)
    app.include_router(rollouts_router, prefix=API_PREFIX)
    # Update eligibility: download credentials for devices in good standing (docs/adr/0013).
    ttl = dt.timedelta(seconds=settings.download_credential_ttl_s)
    app.state.eligibility = Eligibility(settings.master_key, CredentialLimits(ttl=ttl))
    app.include_router(eligibility_router, prefix=API_PREFIX)
    # Error reports: signed batch ingest, buckets, download (docs/adr/0015).
    app.state.error_report_settings = settings.error_reports
    app.include_router(errorreports_router, prefix=API_PREFIX)
    # Fleet health and device log requests (docs/error-reports.md "Fleet health", "Device logs").
    app.include_router(fleet_health_router, prefix=API_PREFIX)
    app.include_router(device_logs_router, prefix=API_PREFIX)
    app.include_router(console_router())  # the operator console at /console (ADR 0022)
    # Static TUF files (metadata public, targets behind a download credential), served ahead of
    # routing: added last, so the outermost middleware.
    app.add_middleware(TufStaticMiddleware, settings=settings, state=app.state)
    return app


def create_app_from_env() -> ServiceApp:
    """App factory for uvicorn workers: settings from the environment, schema assumed migrated."""
    app = create_app(
        Settings.from_env(),
        migrate_on_startup=False,
        tuf_refresh_interval_s=TUF_REFRESH_INTERVAL_S,
        crl_refresh_interval_s=CRL_REFRESH_INTERVAL_S,
        retention_interval_enabled=True,
        rollout_gate_interval_s=gate_interval_from_env(os.environ),
        freeze_heap_at_start=True,
    )
    app.state.auth_limits = AuthLimits.from_env()
    app.state.observability = ObservabilitySettings.from_env()
    return app
