"""Device update commands: ``device provision``, ``device update-check``, ``device apps``.

``provision`` pins a tenant app-signing public key (and optionally the update
interval) in the device's config partition; the device installs only apps that
a pinned key signed. ``provision --insecure-no-sandbox`` (undone by ``--sandbox``) sets the device
option that runs the OS and its apps without sandboxes. ``update-check`` asks the
running OS, over its control socket ``DEV/os-state/control.sock``, to check for
updates now and prints the summary. ``apps`` lists the apps in the device's app
store (``DEV/apps``) and, if the OS runs, their processes (pids as the OS sees
them, in its own pid namespace) and the sandbox layers each runs under.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.apps import device_app
from bastion.cli.output import JsonOption, emit_object, emit_table, fail, progress

__all__ = ["apps_cmd", "provision_cmd", "update_check_cmd"]

DevDirOption = Annotated[Path, typer.Option("--dir", help="The device directory.")]
#: Bound on a public key file read by ``provision``.
MAX_KEY_FILE_BYTES = 16 * 1024
_OS_STATE = "os-state"
_CONTROL_HINT = "start the device with `bastion device run --dir DEV` (the OS answers on DEV/os-state/control.sock)"


@device_app.command("provision")
def provision_cmd(  # noqa: PLR0917 - one parameter per CLI option, as Typer requires
    dev_dir: DevDirOption,
    app_key: Annotated[
        Path | None, typer.Option("--app-key", help="Tenant app-signing PUBLIC key (PEM) to pin on the device.")
    ] = None,
    update_interval: Annotated[
        float | None, typer.Option("--update-interval", help="Seconds between update checks (default 72000 = 20 h).")
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="Security Service URL, if the device has none yet.")
    ] = None,
    insecure_no_sandbox: Annotated[
        bool | None,
        typer.Option(
            "--insecure-no-sandbox/--sandbox",
            help="INSECURE: run the OS and apps without sandboxes (attested); --sandbox undoes it.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Pin a tenant app-signing key (and update settings) in the device's config partition."""
    from bastion.hw.chip import Chip
    from bastion.hw.errors import HwError
    from bastion.hw.flash import Partition
    from bastion.os.config import DeviceConfig, encode_config, parse_config
    from bastion.os.errors import ConfigError

    if app_key is None and update_interval is None and service is None and insecure_no_sandbox is None:
        fail("nothing to provision", hint="pass --app-key PUB.pem and/or --update-interval SECONDS")
    try:
        chip = Chip.open(dev_dir)
        current = None if chip.flash.is_empty(Partition.CONFIG) else parse_config(chip.flash.read(Partition.CONFIG))
    except HwError as exc:
        fail(str(exc), hint="manufacture a device with `bastion device manufacture --dir DEV`")
    except ConfigError as exc:
        fail(f"the device config is unreadable: {exc}")
    if current is None:
        if service is None:
            fail("this device has no service URL yet", hint="pass --service URL")
        try:
            current = DeviceConfig(service_url=service)
        except ConfigError as exc:
            fail(str(exc))
    changes: dict[str, Any] = {}
    if service is not None:
        changes["service_url"] = service
    if app_key is not None:
        changes["app_signing_keys"] = _pin_key(app_key, current.app_signing_keys)
    if update_interval is not None:
        changes["update_interval_s"] = update_interval
    if insecure_no_sandbox is not None:
        changes["insecure_no_sandbox"] = insecure_no_sandbox
    try:
        config = parse_config(encode_config(dataclasses.replace(current, **changes)))  # validates every field
        chip.flash.write(Partition.CONFIG, encode_config(config))
    except ConfigError as exc:
        fail(str(exc))
    progress(f"provisioned {dev_dir}; a running OS picks this up at its next boot")
    if config.insecure_no_sandbox:
        progress("WARNING: --insecure-no-sandbox: this device will run its OS and apps WITHOUT sandboxes")
    emit_object(
        {
            "service_url": config.service_url,
            "app_signing_keys": len(config.app_signing_keys),
            "update_interval_s": config.update_interval_s,
            "app_updates": config.app_updates,
            "insecure_no_sandbox": config.insecure_no_sandbox,
        },
        as_json=as_json,
        title="device provisioned",
    )


def _pin_key(app_key: Path, pinned: tuple[str, ...]) -> tuple[str, ...]:
    """``pinned`` plus the public key in ``app_key`` (normalised PEM, no duplicates)."""
    from bastion.crypto.errors import CryptoError
    from bastion.crypto.keys import load_public_key_pem, public_key_pem
    from bastion.os.config import MAX_APP_SIGNING_KEYS

    try:
        pem = public_key_pem(load_public_key_pem(app_key.read_bytes()[: MAX_KEY_FILE_BYTES + 1])).decode()
    except OSError as exc:
        fail(f"cannot read {app_key}: {exc.strerror}")
    except CryptoError:
        fail(f"{app_key} is not a P-256 public key in PEM", hint="use the public key made by `bastion keys create`")
    if pem in pinned:
        return pinned
    if len(pinned) >= MAX_APP_SIGNING_KEYS:
        fail(f"the device already pins {MAX_APP_SIGNING_KEYS} app keys")
    return (*pinned, pem)


def _control(dev_dir: Path, op: str) -> dict[str, Any]:
    from bastion.os.updates.control import request_control
    from bastion.os.updates.errors import UpdateUnavailableError

    path = dev_dir / _OS_STATE / "control.sock"
    if not path.exists():
        fail(f"no OS is running on {dev_dir}", hint=_CONTROL_HINT)
    try:
        return request_control(path, {"op": op})
    except UpdateUnavailableError as exc:
        fail(str(exc), hint=_CONTROL_HINT)


@device_app.command("update-check")
def update_check_cmd(dev_dir: DevDirOption, as_json: JsonOption = False) -> None:
    """Ask the running device OS to check for updates now, and print what it did."""
    progress(f"asking the OS on {dev_dir} to check for updates")
    answer = _control(dev_dir, "update-check")
    if "error" in answer:
        fail(f"the OS refused the request: {answer.get('error')}: {answer.get('detail', '')}")
    if as_json:
        emit_object(answer, as_json=True)
        return

    def items(key: str, *fields: str) -> str:
        rows = answer.get(key) or []
        return ", ".join(" ".join(str(r.get(f, "")) for f in fields) for r in rows if isinstance(r, dict)) or "-"

    emit_object(
        {
            "result": answer.get("result"),
            "group": answer.get("group_id"),
            "installed": items("installed", "component_id", "version"),
            "refused": items("refused", "target", "reason"),
            "failed": items("failed", "target", "reason"),
            "detail": answer.get("detail") or None,
            "next_check_at": answer.get("next_check_at"),
            "report": answer.get("report"),
        },
        as_json=False,
        title="update check",
    )
    if answer.get("result") in ("refused", "failed"):
        fail(f"the update check ended with {answer.get('result')}", hint="see the events in the device's OS log")


@device_app.command("apps")
def apps_cmd(dev_dir: DevDirOption, as_json: JsonOption = False) -> None:
    """List the apps installed on the device (and, if its OS runs, their processes and sandbox layers)."""
    from bastion.os.apps.store import AppStore
    from bastion.os.device_dir import readable_app_store

    apps_dir = readable_app_store(dev_dir)
    installed = AppStore(apps_dir).installed() if apps_dir.is_dir() else []
    running: dict[str, dict[str, Any]] = {}
    if (dev_dir / _OS_STATE / "control.sock").exists():
        status = _control(dev_dir, "status")
        running = {row["component_id"]: row for row in status.get("apps", []) if isinstance(row, dict)}
    rows = [
        {
            "component_id": app.component_id,
            "name": app.manifest.name,
            "version": app.version,
            "entry_point": app.manifest.entry_point,
            "pid": running.get(app.component_id, {}).get("pid"),
            "crashes": running.get(app.component_id, {}).get("crashes"),
            "path": str(app.path),
            "sandbox": running.get(app.component_id, {}).get("sandbox"),
            "layers": _layers(running.get(app.component_id, {}).get("sandbox")),
        }
        for app in installed
    ]
    emit_table(rows, ["name", "component_id", "version", "pid", "crashes", "layers"], as_json=as_json, title="apps")


def _layers(sandbox: object) -> str | None:
    """The sandbox layers the running OS reports for an app, as one line."""
    from bastion.os.sandbox.layers import summarize

    return summarize(sandbox) if isinstance(sandbox, dict) and sandbox else None
