"""``bastion vendor init``: the silicon vendor's CA, boot-signing key, OS key and bootloader.

The bootloader image carries the boot stage's and the monitor's code with the
boot configuration (:mod:`bastion.boot.bootloader_image`); its measurement is
printed, as every device made with it reports it as ``fwid[0]``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.apps import vendor_app
from bastion.cli.output import JsonOption, emit_object, fail, progress

__all__ = ["DEFAULT_VENDOR_DIR", "init_cmd"]

DEFAULT_VENDOR_DIR = Path(".bastion/vendor")


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
