"""Development mode and sideloading: ``bastion device enable-development|disable-development|sideload|start|stop|logs``
and the operator's ``bastion device capability issue|list|revoke``.

The device commands talk to the running OS through its local device API (the
control socket ``DEV/os-state/control.sock``, :mod:`bastion.os.devmode.local_api`).
``enable-development`` and ``disable-development`` also work while the device is
off: they check the capability exactly as the OS does (against the tenant CA
chain the device stored at its last attestation) and write the OS state
directory; the OS checks it again when it starts. ``--service`` has the logged-in
service issue the capability first. ``sideload``, ``start``, ``stop`` and ``logs``
need the running OS and a valid capability: without one the OS refuses and
records the refusal.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.apps import device_app
from bastion.cli.output import JsonOption, emit_cut_note, emit_object, emit_table, fail, progress

__all__ = [
    "capability_issue_cmd",
    "capability_list_cmd",
    "capability_revoke_cmd",
    "disable_development_cmd",
    "enable_development_cmd",
    "local_logs",
    "sideload_cmd",
    "start_cmd",
    "stop_cmd",
]

DevDirOption = Annotated[Path, typer.Option("--dir", help="The device directory.")]
AppArg = Annotated[str, typer.Argument(help="The app: its component ID, or its name on this device.")]
#: Bound on a capability file or developer key file read from disk.
MAX_FILE_BYTES = 16 * 1024
_OS_STATE = "os-state"
_RUN_HINT = "start the device with `bastion device run --dir DEV` (the local device API is its control socket)"
_ENABLE_HINT = "install a capability with `bastion device enable-development --dir DEV --file CAP` (or --service)"
_CAPABILITY_COLUMNS = ("id", "kind", "issued_at", "expires_at", "revoked_at", "group_id")
#: Capabilities the service lists per device (CapabilityPolicy.list_rows); at this many the list may be cut.
CAPABILITY_LIST_ROWS = 100

capability_app = typer.Typer(
    help="Device capability files (appDevelopment, fieldServicing): issue, list, revoke (operator).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
device_app.add_typer(capability_app, name="capability")


def _socket(dev_dir: Path) -> Path:
    return dev_dir / _OS_STATE / "control.sock"


def _call(dev_dir: Path, op: str, *, upload: Path | None = None, **args: Any) -> dict[str, Any]:
    """One local-API request to the running OS; a refusal fails with the OS's reason."""
    from bastion.os.updates.control import request_control, upload_control
    from bastion.os.updates.errors import UpdateUnavailableError

    path = _socket(dev_dir)
    if not path.exists():
        fail(f"no OS is running on {dev_dir}", hint=_RUN_HINT)
    try:
        answer = (
            request_control(path, {"op": op, **args})
            if upload is None
            else upload_control(path, {"op": op, **args}, upload)
        )
    except UpdateUnavailableError as exc:
        fail(str(exc), hint=_RUN_HINT)
    if "error" in answer:
        code = str(answer.get("error"))
        hint = _ENABLE_HINT if code in ("no_capability", "unknown_op") else None
        if code == "signature":
            hint = "sign the image with a developer key the capability lists (`bastion app package --key DEV.key`)"
        fail(f"the OS refused: {answer.get('detail', code)} ({code})", hint=hint)
    return answer


def _device_id(dev_dir: Path) -> str:
    from bastion.boot.info import describe_device
    from bastion.hw.errors import ChipNotFoundError, HwError

    try:
        device_id = describe_device(dev_dir).device_id
    except ChipNotFoundError:
        fail(f"no chip in {dev_dir}", hint="manufacture one with `bastion device manufacture --dir DEV`")
    except HwError as exc:
        fail(f"the device state is unreadable: {exc}")
    if device_id is None:
        fail(f"the chip in {dev_dir} has no readable DeviceID certificate")
    return device_id


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read the {what} {path}: {exc.strerror}")
    if len(data) > MAX_FILE_BYTES:
        fail(f"the {what} {path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _issue(device_id: str, *, kind: str, developer_keys: list[Path], product: str | None, days: int | None) -> Any:
    from bastion.cli._client import ServiceClient

    body: dict[str, Any] = {
        "kind": kind,
        "developer_keys": [_read(p, "developer key").decode("ascii", "replace") for p in developer_keys],
    }
    if product is not None:
        body["product"] = product
    if days is not None:
        body["valid_days"] = days
    with ServiceClient.from_saved_login() as client:
        return client.post_json(f"/devices/{device_id}/capabilities", body)


def _install_offline(dev_dir: Path, device_id: str, data: bytes) -> dict[str, Any]:
    """Check and install a capability while the device is off (the OS checks it again at start)."""
    from bastion.os.devmode.capability import DevelopmentMode, describe
    from bastion.os.errors import LocalApiRefusedError, StateError
    from bastion.os.state import StateDir

    state_path = dev_dir / _OS_STATE
    state_dir = StateDir(state_path)
    try:
        capability = DevelopmentMode(state_dir, device_id=device_id).install(data, now=dt.datetime.now(dt.UTC))
        owner = state_path.stat()
        if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
            # The OS may run as its own user: it must be able to read what root wrote.
            os.chown(state_dir.capability_path, owner.st_uid, owner.st_gid)
    except LocalApiRefusedError as exc:
        hint = "let the device attest once (`bastion device run`) first" if exc.reason == "not_attested" else None
        fail(f"the capability was refused: {exc}", hint=hint)
    except (StateError, OSError) as exc:
        fail(f"cannot install the capability: {exc}")
    return describe(capability)


@device_app.command("enable-development")
def enable_development_cmd(  # noqa: PLR0917 - one parameter per CLI option, as Typer requires
    dev_dir: DevDirOption,
    file: Annotated[Path | None, typer.Option("--file", help="A capability file issued by the service.")] = None,
    service: Annotated[
        bool, typer.Option("--service", help="Have the logged-in service issue one for this device first.")
    ] = False,
    developer_key: Annotated[
        list[Path] | None,
        typer.Option("--developer-key", help="With --service: a developer PUBLIC key (PEM) to list (repeatable)."),
    ] = None,
    product: Annotated[
        str | None, typer.Option("--product", help="With --service: the product whose Development group to join.")
    ] = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="With --service: lifetime in days.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="With --service: also save the file here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Put the device in development mode: install an appDevelopment capability file."""
    if (file is None) == (not service):
        fail("give exactly one of --file CAP or --service", hint="e.g. --service --developer-key dev.pub.pem")
    if file is not None and (developer_key or product or days or out):
        fail("--developer-key, --product, --days and --out go with --service")
    device_id = _device_id(dev_dir)
    if service:
        progress(f"asking the service for an appDevelopment capability for {device_id}")
        issued = _issue(
            device_id, kind="appDevelopment", developer_keys=developer_key or [], product=product, days=days
        )
        data = base64.b64decode(str(issued["capability"]))
        if out is not None:
            try:
                out.write_bytes(data)
            except OSError as exc:
                fail(f"cannot write {out}: {exc.strerror}")
    elif file is not None:
        data = _read(file, "capability file")
    if _socket(dev_dir).exists():
        with tempfile.TemporaryDirectory(prefix="bastion-cap-") as scratch:
            staged = Path(scratch) / "capability.cose"
            staged.write_bytes(data)
            summary = _call(dev_dir, "enable-development", upload=staged)["development"]
        progress("installed in the running OS; it attests again now, and joins its product's Development group")
    else:
        summary = _install_offline(dev_dir, device_id, data)
        progress("installed; the OS checks it again when it starts")
    emit_object(summary, as_json=as_json, title="development mode on")


@device_app.command("disable-development")
def disable_development_cmd(dev_dir: DevDirOption, as_json: JsonOption = False) -> None:
    """Leave development mode: remove the device's capability file."""
    if _socket(dev_dir).exists():
        removed = bool(_call(dev_dir, "disable-development").get("removed"))
    else:
        from bastion.os.devmode.capability import DevelopmentMode
        from bastion.os.errors import StateError
        from bastion.os.state import StateDir

        try:
            dev = DevelopmentMode(StateDir(dev_dir / _OS_STATE), device_id=_device_id(dev_dir))
            removed = dev.disable(now=dt.datetime.now(dt.UTC), why="disabled with the CLI while the OS was off")
        except StateError as exc:
            fail(str(exc))
    if removed:
        progress("development mode is off; the device returns to its group at its next attestation")
    emit_object({"removed": removed}, as_json=as_json, title="development mode off")


def _resolve(dev_dir: Path, ref: str) -> str:
    """A component ID, from an ID or an installed app's name."""
    from bastion.os.apps.store import AppStore
    from bastion.os.device_dir import readable_app_store

    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    apps_dir = readable_app_store(dev_dir)
    installed = AppStore(apps_dir).installed() if apps_dir.is_dir() else []
    named = [a.component_id for a in installed if a.manifest.name == ref]
    if len(named) != 1:
        fail(f"no single installed app is named {ref!r}", hint="list them with `bastion device apps --dir DEV`")
    return named[0]


@device_app.command("sideload")
def sideload_cmd(
    dev_dir: DevDirOption,
    image: Annotated[Path, typer.Argument(help="An app image built by `bastion app package`.")],
    no_start: Annotated[bool, typer.Option("--no-start", help="Install it, but do not start it.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Install an app image on a device in development mode (signed by a listed developer key)."""
    if not image.is_file():
        fail(f"{image} does not exist", hint="build one with `bastion app package`")
    progress(f"sideloading {image} to {dev_dir}")
    answer = _call(dev_dir, "sideload", upload=image, start=not no_start)
    emit_object(answer, as_json=as_json, title="app sideloaded")


@device_app.command("start")
def start_cmd(dev_dir: DevDirOption, app_ref: AppArg, as_json: JsonOption = False) -> None:
    """Start (or restart) an installed app (needs a device capability)."""
    answer = _call(dev_dir, "app-start", component_id=_resolve(dev_dir, app_ref))
    emit_object(answer, as_json=as_json, title="app started")


@device_app.command("stop")
def stop_cmd(dev_dir: DevDirOption, app_ref: AppArg, as_json: JsonOption = False) -> None:
    """Stop an app until it is started again or the device reboots (needs a device capability)."""
    answer = _call(dev_dir, "app-stop", component_id=_resolve(dev_dir, app_ref))
    emit_object(answer, as_json=as_json, title="app stopped")


def local_logs(dev_dir: Path, app_ref: str, *, max_bytes: int, as_json: bool) -> None:
    """``bastion device logs --dir DEV APP``: the end of an app's log on a local device (needs a device capability).

    The command itself is in :mod:`bastion.cli.fleet_health_cmds`: without ``--dir`` it asks a
    device through the service instead.
    """
    answer = _call(dev_dir, "app-logs", component_id=_resolve(dev_dir, app_ref), max_bytes=max_bytes)
    if as_json:
        emit_object(answer, as_json=True)
        return
    sys.stdout.write(str(answer.get("log", "")))


# --- operator commands (the service) ------------------------------------------------


@capability_app.command("issue")
def capability_issue_cmd(  # noqa: PLR0917 - one parameter per CLI option, as Typer requires
    device_id: Annotated[str, typer.Argument(help="The device ID (64 lowercase hex characters).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the capability file.")],
    kind: Annotated[str, typer.Option("--kind", help="appDevelopment or fieldServicing.")] = "appDevelopment",
    developer_key: Annotated[
        list[Path] | None, typer.Option("--developer-key", help="A developer PUBLIC key (PEM) to list (repeatable).")
    ] = None,
    product: Annotated[
        str | None, typer.Option("--product", help="The product whose Development group the device joins.")
    ] = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="Lifetime in days (default 30).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a capability file for one device (contributor); install it with `device enable-development --file`."""
    issued = _issue(device_id, kind=kind, developer_keys=developer_key or [], product=product, days=days)
    try:
        out.write_bytes(base64.b64decode(str(issued.pop("capability"))))
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    progress(f"capability written to {out}")
    emit_object(issued, as_json=as_json, title="capability issued")


@capability_app.command("list")
def capability_list_cmd(
    device_id: Annotated[str, typer.Argument(help="The device ID.")], as_json: JsonOption = False
) -> None:
    """List the capabilities issued for a device, newest first."""
    from bastion.cli._client import ServiceClient

    with ServiceClient.from_saved_login() as client:
        page = client.get_bounded(f"/devices/{device_id}/capabilities", bound=CAPABILITY_LIST_ROWS)
    emit_table(page.rows, _CAPABILITY_COLUMNS, as_json=as_json, title="capabilities")
    emit_cut_note(
        shown=len(page.rows), offset=0, more=page.more, what="capabilities", hint="the service lists a bounded number"
    )


@capability_app.command("revoke")
def capability_revoke_cmd(
    device_id: Annotated[str, typer.Argument(help="The device ID.")],
    capability_id: Annotated[str, typer.Argument(help="The capability ID.")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a capability (contributor): the device's next attestation with it is refused."""
    from bastion.cli._client import ServiceClient

    with ServiceClient.from_saved_login() as client:
        row = client.post_json(f"/devices/{device_id}/capabilities/{capability_id}/revoke")
    emit_object(row, as_json=as_json, title="capability revoked")
