"""Emulated-device commands on the bench: ``device manufacture``, ``device flash``, ``device info``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.apps import device_app
from bastion.cli.output import JsonOption, emit_object, fail, progress
from bastion.cli.vendor_cmds import DEFAULT_VENDOR_DIR

__all__ = ["flash_cmd", "info_cmd", "manufacture_cmd"]

DevDirOption = Annotated[Path, typer.Option("--dir", help="The device directory.")]


@device_app.command("manufacture")
def manufacture_cmd(
    dev_dir: DevDirOption,
    vendor_dir: Annotated[Path, typer.Option("--vendor", help="Vendor directory.")] = DEFAULT_VENDOR_DIR,
    model: Annotated[
        str, typer.Option("--model", help="Chip model (peripherals, real-time cores): mt3620-emu or tiny-emu.")
    ] = "mt3620-emu",
    as_json: JsonOption = False,
) -> None:
    """Manufacture an emulated chip: UDS, fuses, vendor-endorsed DeviceID, bootloader."""
    from bastion.boot.errors import ManufactureError, VendorError
    from bastion.boot.factory import manufacture_device
    from bastion.boot.vendor import load_vendor

    try:
        vendor = load_vendor(vendor_dir)
    except VendorError as exc:
        fail(str(exc), hint=f"run `bastion vendor init --dir {vendor_dir}` first")
    progress(f"manufacturing a chip in {dev_dir}")
    try:
        device_id = manufacture_device(dev_dir, vendor, now=dt.datetime.now(dt.UTC), model=model)
    except ManufactureError as exc:
        fail(str(exc), hint="each device needs its own, new --dir")
    except OSError as exc:
        fail(f"cannot write {dev_dir}: {exc.strerror}")
    emit_object(
        {"device_id": device_id, "dir": str(dev_dir), "model": model}, as_json=as_json, title="device manufactured"
    )


@device_app.command("flash")
def flash_cmd(
    dev_dir: DevDirOption,
    image: Annotated[Path, typer.Option("--os", help="OS image built by `bastion os build`.")],
    slot: Annotated[str | None, typer.Option("--slot", help="A or B (default: the active slot).")] = None,
    activate: Annotated[bool, typer.Option("--activate", help="Make the slot the active one.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Verify an OS image against the device's pinned keys and write it to a slot."""
    from bastion.boot.errors import FlashImageError
    from bastion.boot.factory import flash_os
    from bastion.hw.flash import Slot

    chosen: Slot | None = None
    if slot is not None:
        if slot.upper() not in ("A", "B"):
            fail(f"unknown slot {slot!r}", hint="use --slot A or --slot B")
        chosen = Slot(slot.upper())
    if not image.is_file():
        fail(f"{image} does not exist", hint="build one with `bastion os build`")
    try:
        outcome = flash_os(dev_dir, image, slot=chosen, activate=activate)
    except FlashImageError as exc:
        fail(str(exc), hint="flash an OS image signed with the vendor's os-signing.key")
    emit_object(
        {
            "slot": outcome.slot.value,
            "active": outcome.activated or None,
            "version": outcome.header.version,
            "security_version": outcome.header.security_version,
            "measurement": outcome.measurement.hex(),
        },
        as_json=as_json,
        title="OS flashed",
    )


@device_app.command("info")
def info_cmd(dev_dir: DevDirOption, as_json: JsonOption = False) -> None:
    """Show a device's identity, fuses, slots and recovery state."""
    from bastion.boot.info import describe_device
    from bastion.hw.errors import ChipNotFoundError, HwError

    try:
        info = describe_device(dev_dir)
    except ChipNotFoundError:
        fail(f"no chip in {dev_dir}", hint="manufacture one with `bastion device manufacture`")
    except HwError as exc:
        fail(f"the device state is unreadable: {exc}")
    if info.insecure_no_sandbox:
        progress(
            "WARNING: INSECURE: this device runs its OS and apps WITHOUT sandboxes (--insecure-no-sandbox); "
            "its attestation evidence says so. Undo with `bastion device provision --dir DEV --sandbox`."
        )
    if as_json:
        emit_object(info.to_json(), as_json=True)
        return
    rows: dict[str, object] = {
        "device_id": info.device_id,
        "sandbox": "OFF (--insecure-no-sandbox)" if info.insecure_no_sandbox else "on",
        "lifecycle": info.lifecycle,
        "debug_locked": info.debug_locked,
        "counters": ", ".join(f"{k}={v}" for k, v in sorted(info.counters.items())) or "none",
        "active_slot": info.active_slot,
        "chip_model": info.chip_model or "unreadable",
    }
    for slot in info.slots:
        if slot.problem:
            rows[f"slot {slot.slot}"] = f"unreadable: {slot.problem}"
        elif slot.version is None:
            rows[f"slot {slot.slot}"] = "empty"
        else:
            rows[f"slot {slot.slot}"] = f"{slot.version} (svn {slot.security_version}) {slot.measurement}"
    recovery = info.recovery
    rows["recovery"] = "no" if recovery is None else f"{recovery.stage}/{recovery.check}: {recovery.reason}"
    emit_object(rows, as_json=False, title="device")
