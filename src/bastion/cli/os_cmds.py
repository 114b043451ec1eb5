"""``bastion os build|list|revoke``, and on the service host ``bastion service trust-os-publisher|os-publishers``.

``os build`` packages and signs the device runtime as an OS image; ``os list``
and ``os revoke`` call the operator API; the two service commands manage the
service-wide OS-publisher keys that every OS upload is verified against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from bastion.cli.apps import os_app, service_app
from bastion.cli.output import (
    JsonOption,
    OutputOption,
    emit_object,
    emit_table,
    err_console,
    fail,
    load_signing_key,
    progress,
)

__all__ = ["build_cmd", "list_cmd", "os_publishers_cmd", "revoke_cmd", "trust_os_publisher_cmd"]


@os_app.command("build")
def build_cmd(
    *,
    version: Annotated[str, typer.Option("--version", help="OS version (semantic version, e.g. 1.0.0).")],
    key: Annotated[Path, typer.Option("--key", help="OS-publisher signing key (PEM), e.g. VENDOR/os-signing.key.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Image file to write.")],
    security_version: Annotated[int, typer.Option("--security-version", help="Anti-rollback version.")] = 1,
    fault: Annotated[str | None, typer.Option("--fault", help="Test only: inject a fault.", hidden=True)] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a signed OS image of the device runtime."""
    from bastion.images.errors import ImageError
    from bastion.images.os_build import build_os_image

    signing_key = load_signing_key(key, hint="run `bastion vendor init` to create one")
    try:
        result = build_os_image(output, version, security_version, signing_key, fault=fault, progress=progress)
    except ImageError as exc:
        fail(f"cannot build the OS image: {exc}", hint="versions look like 1.2.3; security versions are >= 0")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    emit_object(
        {
            "image": str(result.path),
            "version": result.header.version,
            "security_version": result.header.security_version,
            "files": result.file_count,
            "measurement": result.measurement.hex(),
        },
        as_json=as_json,
        title="OS image built",
    )


#: Rows asked for per request when ``os list`` fetches every page.
LIST_PAGE = 500
OS_COLUMNS = ("version", "security_version", "feed", "measurement", "published_at", "revoked_at")


@os_app.command("list")
def list_cmd(
    *,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most this many (default: all).")] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many, newest first.")] = 0,
    as_json: JsonOption = False,
    output: OutputOption = "table",
) -> None:
    """List your tenant's OS images (known-good and revoked), newest first; fetches every page."""
    from bastion.cli.fleet_update_cmds import _client

    rows: list[dict[str, Any]] = []
    position = offset
    with _client() as client:
        while True:
            ask = LIST_PAGE if limit is None else min(LIST_PAGE, limit + 1 - len(rows))
            batch = client.get_json("/os-images", limit=ask, offset=position)
            rows.extend(batch)
            position += len(batch)
            if len(batch) < ask or (limit is not None and len(rows) > limit):
                break
    cut = limit is not None and len(rows) > limit
    shown = rows[:limit] if limit is not None else rows
    title = f"OS images {offset + 1}-{offset + len(shown)}" if shown else "OS images"
    if cut:
        title += f" (cut at --limit {limit}; see more with --offset {offset + len(shown)})"
    emit_table(shown, OS_COLUMNS, as_json=as_json, title=title, output=output)
    if cut and (as_json or output.lower() == "csv"):
        err_console.print(f"output cut at --limit {limit}; see more with --offset {offset + len(shown)}")


@os_app.command("revoke")
def revoke_cmd(
    image: Annotated[str, typer.Argument(help="OS version (e.g. 1.2.0) or measurement.")],
    as_json: JsonOption = False,
) -> None:
    """Revoke an OS image: devices running it fail their next attestation, and it leaves every feed."""
    from bastion.cli.fleet_update_cmds import _client

    with _client() as client:
        answer = client.post_json(f"/os-images/{quote(image, safe='')}/revoke")
    revoked = answer["revoked"]
    emit_table(revoked, OS_COLUMNS, as_json=as_json, title=f"revoked {len(revoked)} OS image(s) {image!r}")


@service_app.command("trust-os-publisher")
def trust_os_publisher_cmd(
    key_pem: Annotated[
        Path, typer.Argument(help="The OS publisher's public key (PEM), e.g. VENDOR/os-signing.pub.pem.")
    ],
    name: Annotated[str | None, typer.Option("--name", help="A label for this publisher key.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Trust an OS-publisher public key to sign OS images (service-wide; checked at every upload)."""
    import datetime as dt

    from bastion.cli.service_cmds import _local_admin
    from bastion.service.vendors.os_keys import MAX_OS_KEY_PEM_BYTES, trust_os_publisher

    try:
        with key_pem.open("rb") as fh:
            pem = fh.read(MAX_OS_KEY_PEM_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {key_pem}: {exc.strerror}")
    if len(pem) > MAX_OS_KEY_PEM_BYTES:
        fail(f"{key_pem} is larger than {MAX_OS_KEY_PEM_BYTES} bytes; is it a public key?")
    with _local_admin() as (_settings, session):
        result = trust_os_publisher(session, pem, name=name, now=dt.datetime.now(dt.UTC))
        row = {"key_id": result.key.key_id, "name": result.key.name, "added": result.added}
    title = "OS-publisher key trusted" if result.added else "OS-publisher key was already trusted"
    emit_object(row, as_json=as_json, title=title)


@service_app.command("os-publishers")
def os_publishers_cmd(as_json: JsonOption = False) -> None:
    """List the trusted OS-publisher keys."""
    from bastion.cli.service_cmds import _local_admin
    from bastion.service.vendors.os_keys import list_os_publishers

    with _local_admin() as (_settings, session):
        rows = [
            {"key_id": k.key_id, "name": k.name, "created_at": k.created_at, "created_by": k.created_by}
            for k in list_os_publishers(session)
        ]
    emit_table(rows, ("name", "key_id", "created_at"), as_json=as_json, title="trusted OS-publisher keys")
