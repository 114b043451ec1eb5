"""``bastion fleet health`` and ``bastion device logs``: fleet crash-free rates and an app's log from a device.

They use the login saved by ``bastion login`` (:mod:`bastion.cli.token_cmds`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._client import ServiceClient
from bastion.cli.apps import device_app, fleet_app
from bastion.cli.devmode_cmds import local_logs
from bastion.cli.output import JsonOption, emit_object, emit_table, fail, inert_text, progress

__all__ = ["device_logs_cmd", "fleet_health_cmd"]

HEALTH_COLUMNS = ("key", "label", "releases", "devices", "crashed_devices", "crash_free")
#: Seconds between two polls of ``device logs --wait``.
POLL_INTERVAL_S = 2.0
#: The longest ``--wait`` (the request itself expires after a day).
MAX_WAIT_S = 24 * 3600


def _rate(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


@fleet_app.command("health")
def fleet_health_cmd(
    by: Annotated[str, typer.Option("--by", help="One row per deployment, os (version) or group.")] = "deployment",
    window: Annotated[str, typer.Option("--window", help="The window ending now: 30m, 24h, 7d.")] = "24h",
    as_json: JsonOption = False,
) -> None:
    """The crash-free device rate per deployment, OS version or group over a window (reader)."""
    if by not in ("deployment", "os", "group"):
        fail(f"--by must be deployment, os or group, not {by[:16]!r}", exit_code=2)
    with ServiceClient.from_saved_login() as client:
        answer = client.get_json("/fleet/health", by=by, window=window)
    items = list(answer.get("items", []))
    if as_json:
        emit_table(items, HEALTH_COLUMNS, as_json=True)
        return
    rows = [
        item | {"releases": ", ".join(item.get("releases") or []), "crash_free": _rate(item.get("crash_free_rate"))}
        for item in items
    ]
    emit_table(rows, HEALTH_COLUMNS, as_json=False, title=f"fleet health by {by}, last {answer.get('window', window)}")


@device_app.command("logs")
def device_logs_cmd(  # noqa: PLR0917 - one parameter per CLI option, as Typer requires
    target: Annotated[
        str, typer.Argument(help="The device ID (64 hex); with --dir, the app (its component ID or name).")
    ],
    app_id: Annotated[str | None, typer.Option("--app", help="The app's component ID (with a device ID).")] = None,
    dev_dir: Annotated[
        Path | None, typer.Option("--dir", help="A local device directory: read its app's log directly.")
    ] = None,
    wait: Annotated[
        int, typer.Option("--wait", min=0, max=MAX_WAIT_S, help="Wait this many seconds for the upload.")
    ] = 0,
    max_bytes: Annotated[int, typer.Option("--bytes", min=1, help="With --dir: how much of the log's end.")] = 16384,
    as_json: JsonOption = False,
) -> None:
    """An app's recent log: asked of a device through the service (contributor), or read with --dir."""
    if dev_dir is not None:
        if app_id is not None:
            fail(
                "--app goes with a device ID",
                hint="with --dir, name the app as the argument: device logs --dir DEV APP",
            )
        local_logs(dev_dir, target, max_bytes=max_bytes, as_json=as_json)
        return
    if app_id is None:
        fail("name the app with --app COMPONENT", hint="or read a local device's app log: device logs --dir DEV APP")
    device_id = target
    with ServiceClient.from_saved_login() as client:
        request = client.post_json(f"/devices/{device_id}/log-requests", {"component_id": app_id})
        request_id = str(request["request_id"])
        path = f"/devices/{device_id}/log-requests/{request_id}"
        deadline = time.monotonic() + wait
        if wait:
            progress(f"log request {request_id} sent; waiting up to {wait} s for the device's next check-in")
        while wait and request.get("state") == "pending" and time.monotonic() < deadline:
            time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
            request = client.get_json(path)
            if request.get("state") == "pending":
                progress(f"still pending ({max(0, int(deadline - time.monotonic()))} s left)")
    if as_json:
        emit_object(request, as_json=True)
        return
    state = request.get("state")
    if state == "delivered":
        text = str(request.get("text") or "")
        note = " (truncated by the device)" if request.get("truncated") else ""
        progress(f"log of {app_id} from {device_id[:16]}…{note}:")
        if sys.stdout.isatty():  # an app's log is remote text: no control sequences into the terminal
            text = inert_text(text)
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return
    shown = {k: request.get(k) for k in ("request_id", "state", "component_id", "requested_at", "expires_at")}
    emit_object(shown, as_json=False, title="log request")
    if wait and state == "pending":
        fail(
            f"the device did not upload the log within {wait} s",
            hint=f"it uploads at its next check-in; read it later with GET /api/v1{path}",
        )
    if state == "expired":
        fail("the request expired before the device uploaded the log", hint="ask again once the device is online")
