"""Commands run on the service host: ``bastion service run|trust-vendor|vendors``, ``bastion tenant create``.

Local administration works directly on the database of ``BASTION_HOME`` (or
``BASTION_DATABASE_URL``), migrating it first; it needs no token because it
needs the master key and the database, which only the service host has.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.apps import service_app, tenant_app
from bastion.cli.output import (
    CliError,
    JsonOption,
    LimitOption,
    OffsetOption,
    console,
    emit_cut_note,
    emit_object,
    emit_table,
    err_console,
    fail,
    progress,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bastion.service.config import Settings

__all__ = ["auth_failures_cmd", "run_cmd", "tenant_create_cmd", "trust_vendor_cmd", "vendors_cmd"]

#: Bound on a vendor CA file we read.
MAX_VENDOR_PEM_BYTES = 64 * 1024
#: Rows a local list shows when no --limit is given.
MAX_LOCAL_ROWS = 10_000
#: Default listen backlog: a reboot storm opens many connections at once.
DEFAULT_BACKLOG = 4096


class HttpParser(enum.StrEnum):
    """The HTTP/1.1 parsers ``service run`` offers."""

    HTTPTOOLS = "httptools"
    H11 = "h11"


#: uvicorn's protocol class for each parser (an import string, so worker processes can load it).
_HTTP_PROTOCOLS = {
    HttpParser.HTTPTOOLS: "bastion.service.http_server:BoundedHttpToolsProtocol",
    HttpParser.H11: "h11",
}


@contextmanager
def _local_admin() -> Iterator[tuple[Settings, Session]]:
    """Yield (settings, session) on the migrated local database; domain errors become CliErrors."""
    from bastion.service.config import Settings
    from bastion.service.db import create_engine_for, make_sessionmaker, migrate
    from bastion.service.errors import ServiceError

    try:
        settings = Settings.from_env()
        migrate(settings.database_url)
        engine = create_engine_for(settings.database_url)
    except ServiceError as exc:
        raise CliError(exc.detail, hint="check BASTION_HOME, BASTION_DATABASE_URL and BASTION_MASTER_KEY") from exc
    try:
        with make_sessionmaker(engine)() as session:
            try:
                yield settings, session
            except ServiceError as exc:
                raise CliError(exc.detail) from exc
    finally:
        engine.dispose()


@service_app.command("run")
def run_cmd(  # noqa: PLR0917 - one parameter per CLI option, as Typer requires
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8443,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="TLS certificate (PEM) to serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="TLS private key (PEM).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="Log level (JSON lines on stderr).")] = "warning",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="One JSON line per request (ADR 0019).")
    ] = True,
    backlog: Annotated[
        int, typer.Option("--backlog", min=1, help="Listen backlog (pending connections the kernel queues).")
    ] = DEFAULT_BACKLOG,
    http: Annotated[
        HttpParser, typer.Option("--http", help="HTTP parser: httptools (fastest) or h11 (pure Python).")
    ] = HttpParser.HTTPTOOLS,
) -> None:
    """Migrate the database, then serve the Security Service.

    It serves with uvicorn's fastest stack (uvloop event loop, httptools HTTP
    parser; both come with ``uvicorn[standard]``). Logs are JSON lines on stderr,
    with an access line per request unless ``--no-access-log``; worker metrics
    meet in ``<BASTION_HOME>/metrics`` (emptied here) for ``/metrics`` (ADR 0019).
    Either parser bounds the request header section (``HttpLimits.max_header_bytes``):
    httptools through :class:`bastion.service.http_server.BoundedHttpToolsProtocol`
    (431), h11 through ``h11_max_incomplete_event_size`` (400).
    """
    import os

    import uvicorn

    from bastion.service.config import HttpLimits, Settings
    from bastion.service.db import migrate
    from bastion.service.errors import ServiceError

    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            fail(f"no such file: {path}")
    try:
        settings = Settings.from_env()
        progress(f"data directory {settings.home}")
        progress("migrating the database")
        migrate(settings.database_url)
    except ServiceError as exc:
        fail(exc.detail, hint="check BASTION_HOME, BASTION_DATABASE_URL and BASTION_MASTER_KEY")
    # Before any worker imports prometheus-client: every worker's counts meet in one directory.
    from bastion.service.metrics_dir import MULTIPROC_ENV, prepare_multiprocess_dir

    os.environ[MULTIPROC_ENV] = str(prepare_multiprocess_dir(settings.home))
    from bastion.service.observability.logconfig import log_config

    scheme = "https" if tls_cert else "http"
    console.print(f"Bastion Security Service on {scheme}://{host}:{port} ({workers} worker(s)); Ctrl-C stops it")
    uvicorn.run(
        "bastion.service.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=_HTTP_PROTOCOLS[http],
        h11_max_incomplete_event_size=HttpLimits().max_header_bytes,
        backlog=backlog,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level=log_level,
        log_config=log_config(log_level, access_log=access_log),
        access_log=False,  # uvicorn's; ours is the JSON access line
        proxy_headers=False,
        server_header=False,
    )


@service_app.command("trust-vendor")
def trust_vendor_cmd(
    ca_pem: Annotated[Path, typer.Argument(help="The silicon vendor's CA certificate (PEM).")],
    name: Annotated[str | None, typer.Option("--name", help="A label for this vendor.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Trust a silicon vendor CA to endorse DeviceID certificates (service-wide)."""
    from bastion.service.vendors.service import trust_vendor

    try:
        with ca_pem.open("rb") as fh:
            pem = fh.read(MAX_VENDOR_PEM_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {ca_pem}: {exc.strerror}")
    if len(pem) > MAX_VENDOR_PEM_BYTES:
        fail(f"{ca_pem} is larger than {MAX_VENDOR_PEM_BYTES} bytes; is it a certificate?")
    with _local_admin() as (_settings, session):
        result = trust_vendor(session, pem, name=name, now=dt.datetime.now(dt.UTC))
        vendor = result.vendor
        row = {"fingerprint": vendor.fingerprint, "name": vendor.name, "added": result.added}
    emit_object(row, as_json=as_json, title="vendor CA trusted" if result.added else "vendor CA was already trusted")


@service_app.command("vendors")
def vendors_cmd(as_json: JsonOption = False) -> None:
    """List the trusted silicon vendor CAs."""
    from bastion.service.vendors.service import list_vendors

    with _local_admin() as (_settings, session):
        rows = [
            {"fingerprint": v.fingerprint, "name": v.name, "created_at": v.created_at} for v in list_vendors(session)
        ]
    emit_table(rows, ("name", "fingerprint", "created_at"), as_json=as_json, title="trusted vendor CAs")


@tenant_app.command("create")
def tenant_create_cmd(
    name: Annotated[str, typer.Argument(help="Tenant name (letters, digits, '.', '_', '-').")],
    as_json: JsonOption = False,
) -> None:
    """Create a tenant with its CA and first admin token (on the service host). Prints the token once."""
    from bastion.service.auth.limits import AuthLimits
    from bastion.service.tenants.service import create_tenant

    with _local_admin() as (settings, session):
        token_limits = AuthLimits.from_env()  # a ConfigError becomes a CliError in _local_admin
        created = create_tenant(
            session, name, master_key=settings.master_key, now=dt.datetime.now(dt.UTC), token_limits=token_limits
        )
    emit_object(
        {
            "tenant_id": created.tenant_id,
            "name": created.name,
            "token_id": created.admin_token_id,
            "token": created.admin_token,
        },
        as_json=as_json,
        title="tenant created",
    )
    err_console.print(
        "[yellow]warning:[/yellow] this admin token is shown only once; store it now, then "
        "log in with it: `bastion login --url URL` prompts for it (or pipe it with --token-stdin)."
    )


@service_app.command("auth-failures")
def auth_failures_cmd(limit: LimitOption = None, offset: OffsetOption = 0, as_json: JsonOption = False) -> None:
    """Show the service-wide log of failed operator authentication, newest window first.

    Failed authentications are counted per time window and reason here, never
    written into a tenant's audit log (an outsider could flood it).
    """
    from bastion.service.auth.failures import count_auth_failures, list_auth_failures

    with _local_admin() as (_settings, session):
        total = count_auth_failures(session)
        rows = [
            {
                "window_start": f.window_start,
                "reason": f.reason,
                "count": f.count,
                "first_at": f.first_at,
                "last_at": f.last_at,
                "last_target": f.last_target,
            }
            for f in list_auth_failures(session, limit=limit or MAX_LOCAL_ROWS, offset=offset)
        ]
    columns = ("window_start", "reason", "count", "last_at", "last_target")
    emit_table(rows, columns, as_json=as_json, title="failed authentication (service-wide)")
    emit_cut_note(shown=len(rows), offset=offset, more=offset + len(rows) < total, what="windows")
