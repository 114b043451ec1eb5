"""Operator commands for the fleet model and updates, over the service's HTTP API.

``bastion product create|list|show``, ``bastion device-group create|list|show|update``,
``bastion device assign|show|show-deployment-status``, ``bastion keys register|list``,
``bastion image add|list``, ``bastion deployment list`` and ``bastion os publish``
(``deployment create|show`` and ``os promote``, with their rollout options, are in
:mod:`bastion.cli.rollout_cmds`). They use the login saved by ``bastion login``.

``os publish`` (with ``--feed``) and ``device show`` (with the update history)
replace the issue 2 versions in :mod:`bastion.cli.fleet_cmds`: this module is
registered after it, and a later Typer registration of a name wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

from bastion.cli._client import SERVICE_MAX_ROWS, ServiceClient
from bastion.cli.apps import deployment_app, device_app, device_group_app, image_app, keys_app, os_app, product_app
from bastion.cli.output import JsonOption, OutputOption, emit_cut_note, emit_object, emit_table, err_console, fail

__all__ = [
    "assign_cmd",
    "deployment_list_cmd",
    "device_show_cmd",
    "group_create_cmd",
    "group_list_cmd",
    "group_show_cmd",
    "group_update_cmd",
    "image_add_cmd",
    "image_list_cmd",
    "keys_list_cmd",
    "keys_register_cmd",
    "os_publish_cmd",
    "product_create_cmd",
    "product_list_cmd",
    "product_show_cmd",
    "show_deployment_status_cmd",
]

#: App images shown without --limit (newest first).
IMAGE_DEFAULT_ROWS = 500
#: What to do when a list the service does not page reached its bound.
_BOUNDED_HINT = f"the service lists at most {SERVICE_MAX_ROWS}; narrow the list"

#: Read size while uploading an image.
UPLOAD_CHUNK_BYTES = 256 * 1024
#: Bound on a public key file read for ``keys register``.
MAX_KEY_FILE_BYTES = 16 * 1024

PRODUCT_COLUMNS = ("id", "name", "description", "created_at")
GROUP_COLUMNS = ("id", "name", "update_policy", "os_feed", "window")
KEY_COLUMNS = ("id", "name", "key_id", "created_at", "created_by")
IMAGE_COLUMNS = ("id", "component_id", "version", "security_version", "size", "sha256", "uploaded_at")
DEPLOYMENT_COLUMNS = ("id", "group_id", "created_at", "created_by")
DEVICE_STATE_COLUMNS = ("device_id", "state", "os_version", "last_result", "last_result_at")
HISTORY_COLUMNS = ("at", "kind", "component_id", "version", "detail")
ATTESTATION_COLUMNS = ("at", "result", "reason", "os_version", "detail")

DeviceIdArg = Annotated[str, typer.Argument(help="The device ID (64 lowercase hex characters).")]
GroupRef = Annotated[str, typer.Argument(help='Group id, or "PRODUCT/GROUP" (e.g. "Lamp/Field Test").')]
PolicyOption = Annotated[str | None, typer.Option("--policy", help="UpdateAll, No3rdPartyAppUpdates or NoUpdates.")]
FeedOption = Annotated[str | None, typer.Option("--feed", help="OS feed: retail or retail-eval.")]
WindowStart = Annotated[str | None, typer.Option("--window-start", help="Maintenance window start, HH:MM (UTC).")]
WindowMinutes = Annotated[int | None, typer.Option("--window-minutes", min=1, max=1440, help="Window length.")]


def _client() -> ServiceClient:
    return ServiceClient.from_saved_login()


def _window(start: str | None, minutes: int | None) -> dict[str, Any] | None:
    if start is None and minutes is None:
        return None
    if start is None or minutes is None:
        fail("a maintenance window needs both --window-start HH:MM and --window-minutes N")
    return {"start": start, "duration_minutes": minutes}


def _group_row(group: dict[str, Any]) -> dict[str, Any]:
    window = group.get("maintenance_window")
    text = f"{window['start']} UTC +{window['duration_minutes']}m" if window else "any time"
    return {**group, "window": text}


def _upload(client: ServiceClient, path: str, file: Path, params: dict[str, str] | None = None) -> Any:
    try:
        size = file.stat().st_size
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")

    def chunks(bar: Progress, task: TaskID) -> Iterator[bytes]:
        with file.open("rb") as fh:
            while chunk := fh.read(UPLOAD_CHUNK_BYTES):
                bar.update(task, advance=len(chunk))
                yield chunk

    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(f"uploading {file.name}", total=size)
        response = client.request(
            "POST",
            path,
            content=chunks(bar, task),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            params=params,
        )
    return response.json()


# --- products and device groups ------------------------------------------------------


@product_app.command("create")
def product_create_cmd(
    name: Annotated[str, typer.Argument(help="Product name (unique in your tenant).")],
    description: Annotated[str, typer.Option("--description", help="A note about the product.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a product and its five default device groups (contributor)."""
    with _client() as client:
        product = client.post_json("/products", {"name": name, "description": description})
    if as_json:
        emit_object(product, as_json=True)
        return
    groups = product.pop("groups")
    emit_object(product, as_json=False, title="product created")
    emit_table([_group_row(g) for g in groups], GROUP_COLUMNS, as_json=False, title="device groups")


@product_app.command("list")
def product_list_cmd(as_json: JsonOption = False) -> None:
    """List your tenant's products."""
    with _client() as client:
        page = client.get_bounded("/products")
    emit_table(page.rows, PRODUCT_COLUMNS, as_json=as_json, title="products")
    emit_cut_note(shown=len(page.rows), offset=0, more=page.more, what="products", hint=_BOUNDED_HINT)


@product_app.command("show")
def product_show_cmd(
    product: Annotated[str, typer.Argument(help="Product id or name.")], as_json: JsonOption = False
) -> None:
    """Show a product and its device groups."""
    with _client() as client:
        shown = client.get_json(f"/products/{product}")
    if as_json:
        emit_object(shown, as_json=True)
        return
    groups = shown.pop("groups")
    emit_object(shown, as_json=False, title=f"product {shown['name']}")
    emit_table([_group_row(g) for g in groups], GROUP_COLUMNS, as_json=False, title="device groups")


@device_group_app.command("create")
def group_create_cmd(
    *,
    product: Annotated[str, typer.Option("--product", help="Product id or name.")],
    name: Annotated[str, typer.Option("--name", help="Group name (unique in the product).")],
    policy: PolicyOption = None,
    feed: FeedOption = None,
    window_start: WindowStart = None,
    window_minutes: WindowMinutes = None,
    as_json: JsonOption = False,
) -> None:
    """Create a device group (default: UpdateAll, retail feed, updates at any time)."""
    body: dict[str, Any] = {"product": product, "name": name, "update_policy": policy or "UpdateAll"}
    body["os_feed"] = feed or "retail"
    body["maintenance_window"] = _window(window_start, window_minutes)
    with _client() as client:
        group = client.post_json("/device-groups", body)
    emit_object(_group_row(group), as_json=as_json, title="device group created")


@device_group_app.command("list")
def group_list_cmd(
    product: Annotated[str | None, typer.Option("--product", help="Only this product's groups.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List your tenant's device groups."""
    with _client() as client:
        page = client.get_bounded("/device-groups", {"product": product} if product else None)
    emit_table([_group_row(g) for g in page.rows], ("product_id", *GROUP_COLUMNS), as_json=as_json, title="groups")
    emit_cut_note(shown=len(page.rows), offset=0, more=page.more, what="groups", hint=_BOUNDED_HINT + " (--product)")


@device_group_app.command("show")
def group_show_cmd(group: GroupRef, as_json: JsonOption = False) -> None:
    """Show a device group."""
    with _client() as client:
        shown = client.get_json(f"/device-groups/{group}")
    emit_object(_group_row(shown), as_json=as_json, title=f"device group {shown['name']}")


@device_group_app.command("update")
def group_update_cmd(
    group: GroupRef,
    *,
    policy: PolicyOption = None,
    feed: FeedOption = None,
    window_start: WindowStart = None,
    window_minutes: WindowMinutes = None,
    no_window: Annotated[bool, typer.Option("--no-window", help="Remove the window: update at any time.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Change a group's update policy, OS feed or maintenance window (contributor)."""
    body: dict[str, Any] = {}
    if policy is not None:
        body["update_policy"] = policy
    if feed is not None:
        body["os_feed"] = feed
    window = _window(window_start, window_minutes)
    if no_window and window is not None:
        fail("give either --no-window or --window-start/--window-minutes, not both")
    if no_window or window is not None:
        body["maintenance_window"] = window
    if not body:
        fail("nothing to change", hint="give --policy, --feed, --window-start/--window-minutes or --no-window")
    with _client() as client:
        updated = client.request("PATCH", f"/device-groups/{group}", json_body=body).json()
    emit_object(_group_row(updated), as_json=as_json, title="device group updated")


# --- devices ---------------------------------------------------------------------------


@device_app.command("assign")
def assign_cmd(
    device_id: DeviceIdArg,
    group: Annotated[str, typer.Option("--group", help='Group id or "PRODUCT/GROUP"; "none" to unassign.')],
    as_json: JsonOption = False,
) -> None:
    """Put a device into a device group; it picks the group up at its next attestation (contributor)."""
    with _client() as client:
        device = client.post_json(f"/devices/{device_id}/group", {"group": None if group == "none" else group})
    emit_object(device, as_json=as_json, title="device assigned")


@device_app.command("show")
def device_show_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Show a device: OS, certificate, group, recent attestations and update history."""
    with _client() as client:
        device: dict[str, Any] = client.get_json(f"/devices/{device_id}")
    if as_json:
        emit_object(device, as_json=True)
        return
    attestations = device.pop("attestations", [])
    history = device.pop("update_history", [])
    emit_object(device, as_json=False, title=f"device {device_id}")
    emit_table(attestations, ATTESTATION_COLUMNS, as_json=False, title="recent attestations")
    emit_table(history, HISTORY_COLUMNS, as_json=False, title="update history")


@device_app.command("show-deployment-status")
def show_deployment_status_cmd(device_id: DeviceIdArg, as_json: JsonOption = False) -> None:
    """Show what a device last reported: installed images, OS version, last update result, history."""
    with _client() as client:
        shown: dict[str, Any] = client.get_json(f"/devices/{device_id}/deployment-status")
    if as_json:
        emit_object(shown, as_json=True)
        return
    status = shown.get("status")
    if status is None:
        err_console.print("this device has not reported an update status yet")
        return
    installed = status.pop("installed")
    emit_object(status, as_json=False, title=f"update status of {device_id}")
    emit_table(installed, ("component_id", "version"), as_json=False, title="installed")
    emit_table(shown["history"], HISTORY_COLUMNS, as_json=False, title="update history")


# --- keys, images, deployments, OS feeds -----------------------------------------------------


@keys_app.command("register")
def keys_register_cmd(
    public_key: Annotated[Path, typer.Argument(help="The public key PEM (KEY.pub.pem from `bastion keys create`).")],
    name: Annotated[str | None, typer.Option("--name", help="A label (default: the file name).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register the public half of an app-signing key with the service (admin)."""
    try:
        with public_key.open("rb") as fh:
            pem = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {public_key}: {exc.strerror}")
    if b"PRIVATE KEY" in pem:
        fail(
            f"{public_key} holds a private key; it never leaves this machine",
            hint="register the .pub.pem file that `bastion keys create` wrote next to it",
        )
    if len(pem) > MAX_KEY_FILE_BYTES:
        fail(f"{public_key} is larger than a public key PEM can be")
    label = name or public_key.name.removesuffix(".pem").removesuffix(".pub")
    with _client() as client:
        key = client.post_json("/app-signing-keys", {"name": label, "public_key_pem": pem.decode("ascii", "replace")})
    emit_object(key, as_json=as_json, title="app-signing key registered")


@keys_app.command("list")
def keys_list_cmd(as_json: JsonOption = False) -> None:
    """List the app-signing keys registered for your tenant."""
    with _client() as client:
        page = client.get_bounded("/app-signing-keys")
    emit_table(page.rows, KEY_COLUMNS, as_json=as_json, title="app-signing keys")
    emit_cut_note(shown=len(page.rows), offset=0, more=page.more, what="keys", hint=_BOUNDED_HINT)


@image_app.command("add")
def image_add_cmd(
    image: Annotated[Path, typer.Argument(help="An app image (from `bastion app package`).")],
    as_json: JsonOption = False,
) -> None:
    """Upload an app image; the service checks it is signed by a registered key (contributor)."""
    with _client() as client:
        added = _upload(client, "/app-images", image)
    emit_object(added, as_json=as_json, title="app image added")


@image_app.command("list")
def image_list_cmd(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=SERVICE_MAX_ROWS - 1, help="How many images (newest first).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List your tenant's app images, newest first."""
    with _client() as client:
        page = client.get_capped("/app-images", limit=limit, default=IMAGE_DEFAULT_ROWS)
    emit_table(page.rows, IMAGE_COLUMNS, as_json=as_json, title="app images")
    emit_cut_note(shown=len(page.rows), offset=0, more=page.more, what="images", pages=False)


@deployment_app.command("list")
def deployment_list_cmd(
    group: Annotated[str | None, typer.Option("--group", help="Only this group's deployments.")] = None,
    as_json: JsonOption = False,
    output: OutputOption = "table",
) -> None:
    """List deployments, newest first."""
    with _client() as client:
        page = client.get_bounded("/deployments", {"group": group} if group else None)
    emit_table(page.rows, DEPLOYMENT_COLUMNS, as_json=as_json, title="deployments", output=output)
    emit_cut_note(shown=len(page.rows), offset=0, more=page.more, what="deployments", hint=_BOUNDED_HINT + " (--group)")


@os_app.command("publish")
def os_publish_cmd(
    image: Annotated[Path, typer.Argument(help="The OS image package (from `bastion os build`).")],
    feed: Annotated[str, typer.Option("--feed", help="retail, or retail-eval to evaluate it first.")] = "retail",
    as_json: JsonOption = False,
) -> None:
    """Publish an OS image on a feed: known-good for attestation, and offered to the feed's groups."""
    if feed not in ("retail", "retail-eval"):
        fail(f"unknown feed {feed!r}", hint="use --feed retail or --feed retail-eval")
    with _client() as client:
        published = _upload(client, "/os-images", image, params={"feed": feed})
    emit_object(published, as_json=as_json, title=f"OS image published on {feed}")
