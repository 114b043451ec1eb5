"""Operator commands that talk to the Security Service over HTTP.

``bastion audit``, ``bastion tenant download-ca``,
``bastion device claim|list|show|revoke`` and ``bastion os publish``. They use
the login saved by ``bastion login`` (:mod:`bastion.cli.token_cmds`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._client import ServiceClient
from bastion.cli.apps import app, device_app, tenant_app
from bastion.cli.output import (
    JsonOption,
    LimitOption,
    OffsetOption,
    emit_cut_note,
    emit_object,
    emit_table,
    fail,
    progress,
)

__all__ = [
    "audit_cmd",
    "claim_cmd",
    "download_ca_cmd",
    "list_cmd",
    "revoke_cmd",
]

DEVICE_COLUMNS = ("device_id", "last_result", "last_reason", "os_version", "last_attested_at", "revoked_at")
AUDIT_COLUMNS = ("at", "actor", "action", "target", "outcome", "detail")
#: Events shown without --limit, and the most one request may ask for (one below the service's bound:
#: the CLI asks for one more than it shows, to tell when the log was cut).
AUDIT_DEFAULT_ROWS = 200
AUDIT_MAX_ROWS = 1999

DeviceIdArg = Annotated[str, typer.Argument(help="The device ID (64 lowercase hex characters).")]


@app.command("audit")
def audit_cmd(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=AUDIT_MAX_ROWS, help="How many events (newest first).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the tenant's audit log, newest first (admin)."""
    with ServiceClient.from_saved_login() as client:
        page = client.get_capped("/audit", limit=limit, default=AUDIT_DEFAULT_ROWS)
    emit_table(page.rows, AUDIT_COLUMNS, as_json=as_json, title="audit log")
    emit_cut_note(shown=len(page.rows), offset=0, more=page.more, what="events", pages=False)


@tenant_app.command("download-ca")
def download_ca_cmd(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the PEM here instead of stdout.")] = None,
) -> None:
    """Download the tenant CA certificate (PEM)."""
    with ServiceClient.from_saved_login() as client:
        pem = client.request("GET", "/ca").content
    if output is None:
        sys.stdout.write(pem.decode("ascii", "replace"))
        return
    try:
        output.write_bytes(pem)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    progress(f"tenant CA written to {output}")


@device_app.command("claim")
def claim_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Claim a device for your tenant (once per device, contributor)."""
    with ServiceClient.from_saved_login() as client:
        device = client.post_json("/devices/claim", {"device_id": device_id})
    emit_object(device, as_json=as_json, title="device claimed")


@device_app.command("list")
def list_cmd(limit: LimitOption = None, offset: OffsetOption = 0, as_json: JsonOption = False) -> None:
    """List your tenant's devices with their last attestation result (all of them, or a page)."""
    with ServiceClient.from_saved_login() as client:
        page = client.get_pages("/devices", limit=limit, offset=offset)
    emit_table(page.rows, DEVICE_COLUMNS, as_json=as_json, title="devices")
    emit_cut_note(shown=len(page.rows), offset=offset, more=page.more, what="devices")


@device_app.command("revoke")
def revoke_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Revoke a device: it gets no more certificates (contributor)."""
    with ServiceClient.from_saved_login() as client:
        device = client.post_json(f"/devices/{device_id}/revoke")
    emit_object(device, as_json=as_json, title="device revoked")
