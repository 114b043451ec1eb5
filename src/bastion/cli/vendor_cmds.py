"""``bastion vendor init`` (CA, boot-signing key, OS key and bootloader) and ``bastion vendor voucher``.

The bootloader image carries the boot stage's and the monitor's code with the
boot configuration (:mod:`bastion.boot.bootloader_image`); its measurement is
printed, as every device made with it reports it as ``fwid[0]``.

``bastion vendor voucher`` signs an ownership voucher with the vendor CA key:
the listed device IDs belong to one tenant, which claims them in bulk with
``bastion device claim --voucher FILE`` (:mod:`bastion.crypto.voucher`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.apps import vendor_app
from bastion.cli.output import JsonOption, emit_object, fail, progress

__all__ = ["DEFAULT_VENDOR_DIR", "init_cmd", "voucher_cmd"]

DEFAULT_VENDOR_DIR = Path(".bastion/vendor")
#: Bound on a --devices-file read by ``vendor voucher``.
MAX_DEVICES_FILE = 1024 * 1024


@vendor_app.command("init")
def init_cmd(  # noqa: PLR0917 - typer reads the options from the signature
    vendor_dir: Annotated[Path, typer.Option("--dir", help="Vendor directory to create.")] = DEFAULT_VENDOR_DIR,
    name: Annotated[str, typer.Option(help="Vendor name in the CA certificate.")] = "Bastion Emulated Silicon",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing vendor (new keys!).")] = False,
    trial_timeout: Annotated[
        int,
        typer.Option(
            "--trial-timeout",
            min=1,
            max=24 * 3600,
            help="Seconds a newly installed OS may run on trial before it must confirm (boot configuration).",
        ),
    ] = 60,
    trial_boots: Annotated[
        int, typer.Option("--trial-boots", min=1, max=16, help="Trial boots of a new OS before rolling back.")
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Create the vendor CA, boot-signing key, OS-publisher key and signed bootloader."""
    from bastion.boot.errors import VendorError
    from bastion.boot.vendor import init_vendor
    from bastion.crypto.keys import load_public_key_pem, public_key_bytes

    progress(f"creating vendor keys and bootloader in {vendor_dir}")
    try:
        paths = init_vendor(
            vendor_dir,
            now=dt.datetime.now(dt.UTC),
            name=name,
            force=force,
            trial_boot_limit=trial_boots,
            trial_timeout_s=trial_timeout,
        )
    except VendorError as exc:
        fail(str(exc), hint="use another --dir, or --force to replace it (devices made with it stop booting)")
    except OSError as exc:
        fail(f"cannot write {vendor_dir}: {exc.strerror}")
    boot_pub = load_public_key_pem(paths.boot_pub.read_bytes())
    emit_object(
        {
            "vendor_dir": str(paths.root),
            "ca_cert": str(paths.ca_cert),
            "os_signing_key": str(paths.os_key),
            "bootloader": str(paths.bootloader),
            # fwid[0] of every device made with it: the boot stage's and the monitor's code and the boot config
            "bootloader_measurement": hashlib.sha256(paths.bootloader.read_bytes()).hexdigest(),
            "boot_key_hash": hashlib.sha256(public_key_bytes(boot_pub)).hexdigest(),
        },
        as_json=as_json,
        title="vendor created",
    )


def _device_ids(devices: list[str], devices_file: Path | None) -> list[str]:
    ids = list(devices)
    if devices_file is not None:
        try:
            text = devices_file.read_bytes()[: MAX_DEVICES_FILE + 1]
        except OSError as exc:
            fail(f"cannot read {devices_file}: {exc.strerror}")
        if len(text) > MAX_DEVICES_FILE:
            fail(f"{devices_file} is larger than {MAX_DEVICES_FILE} bytes", hint="split it into several vouchers")
        lines = text.decode("utf-8", "replace").splitlines()
        ids += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        fail("no device IDs given", hint="use --device ID (repeatable) or --devices-file FILE (one ID a line)")
    return ids


@vendor_app.command("voucher")
def voucher_cmd(  # noqa: PLR0917 - typer reads the options from the signature
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant ID the devices go to (its `bastion login`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the voucher.")],
    devices: Annotated[list[str] | None, typer.Option("--device", help="A device ID (repeatable).")] = None,
    devices_file: Annotated[
        Path | None, typer.Option("--devices-file", help="A file of device IDs, one a line.")
    ] = None,
    vendor_dir: Annotated[Path, typer.Option("--dir", help="Vendor directory.")] = DEFAULT_VENDOR_DIR,
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Days the voucher is valid.")] = 30,
    as_json: JsonOption = False,
) -> None:
    """Sign an ownership voucher: these devices belong to that tenant, which claims them in bulk."""
    from bastion.boot.errors import VendorError
    from bastion.boot.vendor import load_vendor
    from bastion.crypto.errors import MalformedInput
    from bastion.crypto.voucher import decode_voucher, sign_voucher

    ids = _device_ids(devices or [], devices_file)
    try:
        vendor = load_vendor(vendor_dir)
    except VendorError as exc:
        fail(str(exc), hint=f"run `bastion vendor init --dir {vendor_dir}` first")
    try:
        blob = sign_voucher(
            vendor.ca_key,
            vendor.ca_cert,
            tenant_id=tenant,
            device_ids=ids,
            now=dt.datetime.now(dt.UTC),
            lifetime=dt.timedelta(days=days),
        )
    except MalformedInput as exc:
        fail(f"cannot make the voucher: {exc}", hint="device IDs are 64 lowercase hex characters, each listed once")
    try:
        output.write_bytes(blob)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    _message, voucher = decode_voucher(blob)
    progress(f"voucher for {len(ids)} device(s) written to {output}")
    emit_object(
        {
            "voucher": str(output),
            "voucher_id": voucher.voucher_id,
            "tenant_id": voucher.tenant_id,
            "devices": len(voucher.device_ids),
            "expires_at": voucher.expires_at.isoformat(),
            "vendor_ca": voucher.signer_fingerprint,
        },
        as_json=as_json,
        title="voucher signed",
    )
