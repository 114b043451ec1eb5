"""Operator commands that talk to the Security Service over HTTP.

``bastion login``, ``bastion audit``, ``bastion tenant download-ca``,
``bastion token create``, ``bastion device claim|list|show|revoke`` and
``bastion os publish``. They use the login saved by ``bastion login``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._client import OperatorConfig, ServiceClient, save_config
from bastion.cli.apps import app, device_app, tenant_app, token_app
from bastion.cli.output import JsonOption, console, emit_object, emit_table, err_console, fail, progress

__all__ = [
    "audit_cmd",
    "claim_cmd",
    "download_ca_cmd",
    "list_cmd",
    "login_cmd",
    "revoke_cmd",
    "token_create_cmd",
]

DEVICE_COLUMNS = ("device_id", "last_result", "last_reason", "os_version", "last_attested_at", "revoked_at")
AUDIT_COLUMNS = ("at", "actor", "action", "target", "outcome", "detail")

DeviceIdArg = Annotated[str, typer.Argument(help="The device ID (64 lowercase hex characters).")]


@app.command("login")
def login_cmd(
    url: Annotated[str, typer.Option("--url", help="Service URL, e.g. http://127.0.0.1:8443")],
    token: Annotated[
        str, typer.Option("--token", prompt=True, hide_input=True, help="Operator API token (prompted if omitted).")
    ],
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle that signed the service's TLS certificate.")
    ] = None,
) -> None:
    """Check a token against the service and save the login (0600)."""
    if not url.startswith(("http://", "https://")):
        fail("the URL must start with http:// or https://", hint="e.g. --url http://127.0.0.1:8443")
    if ca_file is not None and not ca_file.is_file():
        fail(f"no CA file at {ca_file}")
    config = OperatorConfig(
        url=url.rstrip("/"), token=token.strip(), ca_file=str(ca_file.absolute()) if ca_file else None
    )
    with ServiceClient(config) as client:
        who = client.get_json("/whoami")
    path = save_config(config)
    console.print(
        f"logged in to {config.url} as tenant [bold]{who['tenant_name']}[/bold] "
        f"({who['tenant_id']}), role {who['role']}; saved to {path}"
    )


@app.command("audit")
def audit_cmd(
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="How many events (newest first).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the tenant's audit log, newest first (admin)."""
    with ServiceClient.from_saved_login() as client:
        events = client.get_json("/audit", **({"limit": limit} if limit else {}))
    emit_table(events, AUDIT_COLUMNS, as_json=as_json, title="audit log")


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


@token_app.command("create")
def token_create_cmd(
    role: Annotated[str, typer.Option("--role", help="reader, contributor or admin.")],
    name: Annotated[str | None, typer.Option("--name", help="A label for the token.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an operator token for your tenant (admin). The token is shown once."""
    if role not in ("reader", "contributor", "admin"):
        fail(f"unknown role {role!r}", hint="use --role reader, contributor or admin")
    with ServiceClient.from_saved_login() as client:
        created = client.post_json("/tokens", {"name": name or f"{role} token", "role": role})
    emit_object(created, as_json=as_json, title="token created")
    err_console.print("[yellow]warning:[/yellow] store this token now; it is shown only once and cannot be recovered.")


@device_app.command("claim")
def claim_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Claim a device for your tenant (once per device, contributor)."""
    with ServiceClient.from_saved_login() as client:
        device = client.post_json("/devices/claim", {"device_id": device_id})
    emit_object(device, as_json=as_json, title="device claimed")


@device_app.command("list")
def list_cmd(as_json: JsonOption = False) -> None:
    """List your tenant's devices with their last attestation result."""
    with ServiceClient.from_saved_login() as client:
        devices = client.get_json("/devices")
    emit_table(devices, DEVICE_COLUMNS, as_json=as_json, title="devices")


@device_app.command("revoke")
def revoke_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Revoke a device: it gets no more certificates (contributor)."""
    with ServiceClient.from_saved_login() as client:
        device = client.post_json(f"/devices/{device_id}/revoke")
    emit_object(device, as_json=as_json, title="device revoked")
