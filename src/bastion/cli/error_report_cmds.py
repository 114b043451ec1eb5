"""Operator commands for error reports, over the service's HTTP API.

``bastion error-report list`` shows buckets (grouped failures) with filters,
``show BUCKET`` one with its versions, devices and recent events, ``resolve
BUCKET`` (admin or contributor; audited) marks it fixed as of the highest
version seen, ``download`` streams the raw events as CSV (Azure Sphere's
columns, then Bastion's) or JSON. ``prune`` runs one retention pass on the
service host (the service also runs it periodically).

Example::

    bastion error-report list --state open --since 7d
    bastion error-report download --format csv --since 30d -o errors.csv
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._client import ServiceClient
from bastion.cli.apps import app
from bastion.cli.output import CliError, JsonOption, OutputOption, console, emit_object, emit_table

__all__ = [
    "download_cmd",
    "error_report_app",
    "list_cmd",
    "parse_since",
    "prune_cmd",
    "resolve_cmd",
    "show_cmd",
]

error_report_app = typer.Typer(
    help="Error reports: buckets of grouped device failures, their state, and the raw events (CSV/JSON).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(error_report_app, name="error-report")

BUCKET_COLUMNS = (
    "bucket_id",
    "state",
    "category",
    "component_id",
    "title",
    "event_count",
    "device_count",
    "last_version",
    "last_seen",
)
VERSION_COLUMNS = ("version", "event_count", "device_count", "first_seen", "last_seen")
EVENT_COLUMNS = ("device_id", "event_type", "version", "os_version", "count", "last_at", "description")
#: Buckets ``list`` fetches at most (pages of the API's cursor).
MAX_LIST_ROWS = 1000
_PAGE = 200
_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

SinceOption = Annotated[
    str | None, typer.Option("--since", help="A duration back from now (30m, 24h, 7d) or an ISO 8601 time.")
]


def parse_since(value: str, *, now: dt.datetime) -> str:
    """An ISO 8601 UTC time for ``7d``-style durations (back from ``now``) or ISO times.

    Raises:
        CliError: neither a duration nor an ISO time.
    """
    match = _DURATION.fullmatch(value.strip())
    if match:
        return (now - dt.timedelta(seconds=int(match[1]) * _UNIT[match[2]])).isoformat()
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise CliError(
            f"{value!r} is neither a duration nor an ISO 8601 time", hint="e.g. 7d, 24h, 2026-01-31T00:00:00Z"
        ) from exc
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@error_report_app.command("list")
def list_cmd(
    *,
    state: Annotated[str | None, typer.Option("--state", help="open, resolved or regressed.")] = None,
    component: Annotated[str | None, typer.Option("--component", help="Component ID ('' = OS-wide).")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Buckets seen in this version.")] = None,
    include_info: Annotated[
        bool, typer.Option("--include-info", help="Also buckets of Info records only (default: Error and Warning).")
    ] = False,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIST_ROWS, help="Buckets to show at most.")] = 100,
    as_json: JsonOption = False,
    output: OutputOption = "table",
) -> None:
    """List error buckets, most recently seen first."""
    params: dict[str, Any] = {"state": state, "component": component, "version": version}
    params["severity"] = "info" if include_info else "warning"
    if since:
        params["since"] = parse_since(since, now=_now())
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    with ServiceClient.from_saved_login() as client:
        while len(items) < limit:
            query = {k: v for k, v in params.items() if v is not None} | {"limit": min(_PAGE, limit - len(items))}
            if cursor:
                query["cursor"] = cursor
            page = client.get_json("/error-reports/buckets", **query)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    if as_json and output.lower() == "table":
        emit_object({"items": items, "next_cursor": cursor}, as_json=True)
        return
    emit_table(items, BUCKET_COLUMNS, as_json=as_json, title="error buckets", output=output)
    if cursor is not None:
        print(f"output cut at {len(items)} buckets; see more with --limit", file=sys.stderr)


@error_report_app.command("show")
def show_cmd(
    bucket: Annotated[str, typer.Argument(help="Bucket ID (from `error-report list`).")], as_json: JsonOption = False
) -> None:
    """Show one bucket: counts, versions, a sample of devices and recent events."""
    with ServiceClient.from_saved_login() as client:
        detail = client.get_json(f"/error-reports/buckets/{bucket}")
    if as_json:
        emit_object(detail, as_json=True)
        return
    emit_object(detail["bucket"], as_json=False, title=f"bucket {detail['bucket']['bucket_id']}")
    emit_table(detail["versions"], VERSION_COLUMNS, as_json=False, title="versions")
    emit_table(
        detail["devices"],
        ("device_id", "event_count", "first_seen", "last_seen"),
        as_json=False,
        title="devices (sample)",
    )
    emit_table(detail["recent_events"], EVENT_COLUMNS, as_json=False, title="recent events")


@error_report_app.command("resolve")
def resolve_cmd(bucket: Annotated[str, typer.Argument(help="Bucket ID.")], as_json: JsonOption = False) -> None:
    """Mark a bucket resolved (admin or contributor; audited). A newer version's crash reopens it as regressed."""
    with ServiceClient.from_saved_login() as client:
        resolved = client.post_json(f"/error-reports/buckets/{bucket}/resolve")
    if as_json:
        emit_object(resolved, as_json=True)
        return
    console.print(f"bucket {resolved['bucket_id']} resolved in {resolved['resolved_version']}")


@error_report_app.command("download")
def download_cmd(
    *,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    since: SinceOption = None,
    until: Annotated[str | None, typer.Option("--until", help="Like --since; the end of the window.")] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", help="Only this bucket's events (from `list`).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file (default: stdout).")] = None,
) -> None:
    """Download the raw error events (CSV columns: Azure Sphere's, then Bucket, Component, Version, OsVersion)."""
    if fmt not in ("csv", "json"):
        raise CliError("--format must be csv or json")
    now = _now()
    params = {"format": fmt} | ({"since": parse_since(since, now=now)} if since else {})
    if until:
        params["until"] = parse_since(until, now=now)
    if bucket:
        params["bucket"] = bucket
    with ServiceClient.from_saved_login() as client:
        response = client.request("GET", "/error-reports/download", params=params)
    data = response.content
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    output.write_bytes(data)
    print(f"wrote {len(data)} bytes to {output}", file=sys.stderr)


@error_report_app.command("prune")
def prune_cmd(as_json: JsonOption = False) -> None:
    """Run one retention pass on the service host's database (roll up old events, forget old batch IDs)."""
    from bastion.cli.service_cmds import _local_admin
    from bastion.service.errorreports.retention import prune_once

    with _local_admin() as (settings, session):
        pruned = prune_once(session, now=_now(), settings=settings.error_reports)
    emit_object(
        {
            "events_rolled_up": pruned.events_rolled_up,
            "batches_deleted": pruned.batches_deleted,
            "daily_deleted": pruned.daily_deleted,
        },
        as_json=as_json,
        title="error-report retention",
    )
