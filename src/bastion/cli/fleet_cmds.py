"""Operator commands that talk to the Security Service over HTTP.

``bastion audit``, ``bastion tenant download-ca``,
``bastion device claim|unclaim|release|ownership|list|show|revoke`` and ``bastion os publish``.
They use the login saved by ``bastion login`` (:mod:`bastion.cli.token_cmds`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
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
    OutputOption,
    emit_cut_note,
    emit_object,
    emit_table,
    err_console,
    fail,
    progress,
)

__all__ = [
    "audit_cmd",
    "claim_cmd",
    "download_ca_cmd",
    "list_cmd",
    "ownership_cmd",
    "release_cmd",
    "revoke_cmd",
    "unclaim_cmd",
]

DEVICE_COLUMNS = ("device_id", "last_result", "last_reason", "os_version", "last_attested_at", "revoked_at")
AUDIT_COLUMNS = ("at", "actor", "action", "target", "outcome", "detail")
#: Events shown without --limit, and the most one request may ask for (one below the service's bound:
#: the CLI asks for one more than it shows, to tell when the log was cut).
AUDIT_DEFAULT_ROWS = 200
AUDIT_MAX_ROWS = 1999
OWNERSHIP_COLUMNS = ("at", "event", "method", "tenant_id", "to_tenant_id", "actor", "voucher_id")
#: Bound on a voucher file read by ``device claim --voucher`` (the service's own bound is smaller).
MAX_VOUCHER_FILE = 64 * 1024

DeviceIdArg = Annotated[str, typer.Argument(help="The device ID (64 lowercase hex characters).")]


@app.command("audit")
def audit_cmd(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=AUDIT_MAX_ROWS, help="How many events (newest first).")
    ] = None,
    as_json: JsonOption = False,
    output: OutputOption = "table",
) -> None:
    """Show the tenant's audit log, newest first (admin)."""
    with ServiceClient.from_saved_login() as client:
        page = client.get_capped("/audit", limit=limit, default=AUDIT_DEFAULT_ROWS)
    emit_table(page.rows, AUDIT_COLUMNS, as_json=as_json, title="audit log", output=output)
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
def claim_cmd(
    device_id: Annotated[str | None, typer.Argument(help="Not accepted: a device ID alone proves nothing.")] = None,
    dev_dir: Annotated[
        Path | None, typer.Option("--dir", help="The device at hand: it signs evidence over a claim challenge.")
    ] = None,
    voucher: Annotated[
        Path | None, typer.Option("--voucher", help="An ownership voucher from the silicon vendor, for your tenant.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Claim a device for your tenant with proof: the device itself (--dir) or a vendor voucher (contributor)."""
    if device_id is not None:
        fail(
            "a claim needs proof; a device ID alone is not enough (anyone can read it)",
            hint="use `bastion device claim --dir DEV` with the device at hand, or `--voucher FILE` from its vendor",
            exit_code=2,
        )
    if voucher is not None and dev_dir is None:
        _claim_with_voucher(voucher, as_json=as_json)
        return
    if dev_dir is None or voucher is not None:
        fail("give exactly one of --dir and --voucher", hint="e.g. `bastion device claim --dir DEV`", exit_code=2)
    from bastion.cli._claim_evidence import device_id_of, sign_claim_evidence

    chip_id = device_id_of(dev_dir)
    with ServiceClient.from_saved_login() as client:
        challenge = client.post_json("/devices/claim/challenge", {"device_id": chip_id})
        nonce = _b64url_decode(str(challenge.get("nonce", "")))
        progress(f"booting device {chip_id[:16]}… on the bench to sign the claim evidence")
        evidence = sign_claim_evidence(dev_dir, nonce, now=dt.datetime.now(dt.UTC))
        device = client.post_json("/devices/claim", {"evidence": base64.urlsafe_b64encode(evidence).decode("ascii")})
    emit_object(device, as_json=as_json, title="device claimed")


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        fail("the service sent a claim challenge that is not base64url", hint="check the --url of `bastion login`")


def _claim_with_voucher(path: Path, *, as_json: bool) -> None:
    try:
        data = path.read_bytes()[: MAX_VOUCHER_FILE + 1]
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_VOUCHER_FILE:
        fail(f"{path} is larger than a voucher can be ({MAX_VOUCHER_FILE} bytes)", hint="check the file")
    with ServiceClient.from_saved_login() as client:
        result = client.post_json("/devices/claim/voucher", {"voucher": base64.b64encode(data).decode("ascii")})
    if as_json:
        emit_object(result, as_json=True)
    else:
        emit_table(result["claimed"], ("device_id", "claimed_at"), as_json=False, title="devices claimed")
        if result["refused"]:
            emit_table(result["refused"], ("device_id", "error", "detail"), as_json=False, title="not claimed")
    if result["refused"]:
        err_console.print(f"{len(result['refused'])} device(s) of the voucher were not claimed (see above)")


@device_app.command("unclaim")
def unclaim_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Give up a device: it gets no certificate and no update from your tenant; history is kept (contributor)."""
    with ServiceClient.from_saved_login() as client:
        event = client.post_json(f"/devices/{device_id}/unclaim")
    emit_object(event, as_json=as_json, title="device unclaimed")


@device_app.command("release")
def release_cmd(
    device_id: DeviceIdArg,
    to: Annotated[str, typer.Option("--to", help="The receiving tenant's ID; only it may claim the device next.")],
    as_json: JsonOption = False,
) -> None:
    """Release a device to another tenant (a transfer): it is unclaimed, and that tenant claims it with proof."""
    with ServiceClient.from_saved_login() as client:
        event = client.post_json(f"/devices/{device_id}/release", {"to_tenant": to})
    emit_object(event, as_json=as_json, title="device released")
    err_console.print("the receiving tenant now claims it with `bastion device claim --dir DEV` or a voucher")


@device_app.command("ownership")
def ownership_cmd(
    device_id: DeviceIdArg,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="How many events (newest first).")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, max=2**31, help="Skip this many events.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Show a device's ownership history (claims, unclaims, releases) as far as it concerns your tenant."""
    with ServiceClient.from_saved_login() as client:
        events = client.get_json(f"/devices/{device_id}/ownership", limit=limit + 1, offset=offset)
    cut = len(events) > limit
    emit_table(events[:limit], OWNERSHIP_COLUMNS, as_json=as_json, title="ownership history")
    if cut:
        err_console.print(f"more events follow: `bastion device ownership {device_id} --offset {offset + limit}`")


@device_app.command("list")
def list_cmd(
    limit: LimitOption = None, offset: OffsetOption = 0, as_json: JsonOption = False, output: OutputOption = "table"
) -> None:
    """List your tenant's devices with their last attestation result (all of them, or a page)."""
    with ServiceClient.from_saved_login() as client:
        page = client.get_pages("/devices", limit=limit, offset=offset)
    emit_table(page.rows, DEVICE_COLUMNS, as_json=as_json, title="devices", output=output)
    emit_cut_note(shown=len(page.rows), offset=offset, more=page.more, what="devices")


@device_app.command("revoke")
def revoke_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Revoke a device: it gets no more certificates (contributor)."""
    with ServiceClient.from_saved_login() as client:
        device = client.post_json(f"/devices/{device_id}/revoke")
    emit_object(device, as_json=as_json, title="device revoked")
