"""``bastion demo``: the whole chain of trust, as real processes, on embedded defaults.

Creates a vendor, starts the Security Service on loopback with SQLite, creates a
tenant, builds and publishes OS 1.0.0, manufactures a device, flashes and claims
it, boots it (boot, monitor and OS as their own processes) so that it attests
and receives its certificate, shows the device as the service sees it, and ends
with ``openssl verify`` of the device certificate against the tenant CA.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._localstack import CommandFailedError, LocalStack
from bastion.cli.apps import app
from bastion.cli.output import CliError, console, progress

__all__ = ["demo"]


def _step(number: int, text: str) -> None:
    console.print(f"\n[bold cyan]{number}.[/bold cyan] [bold]{text}[/bold]")


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Data directory for everything the demo makes (wiped first).")
    ] = Path(".bastion-demo"),
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the service running at the end (Ctrl-C stops it).")
    ] = False,
) -> None:
    """Run the chain of trust end to end: vendor, service, tenant, device, attestation, certificate."""
    started = time.monotonic()
    if directory.exists():
        progress(f"removing the previous demo in {directory}")
        shutil.rmtree(directory)
    stack = LocalStack(directory, columns=console.width)
    try:
        _run(stack)
        if keep_running and stack.service is not None:
            console.print(f"\nThe service keeps running at {stack.url}; press Ctrl-C to stop it.")
            stack.service.wait()
    except CommandFailedError as exc:
        raise CliError(
            f"a demo step failed: {exc}",
            hint=f"the service log is {stack.service_log}; re-run `make demo` after fixing the cause",
        ) from exc
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop_service()
    console.print(f"\n[green]Demo finished in {time.monotonic() - started:.1f}s.[/green]")
    _print_by_hand(stack)


def _run(stack: LocalStack) -> None:
    root = stack.root
    device_dir = stack.device_dir("device-1")
    os_image = root / "os-1.0.0.img"
    tenant_ca = root / "tenant-ca.pem"

    _step(1, "Create the silicon vendor: CA, boot-signing key, OS-publisher key, signed bootloader")
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    console.print(f"vendor material in {stack.vendor_dir}")

    _step(2, "Start the Security Service on loopback (SQLite) and trust the vendor CA")
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"), "--name", "Demo Silicon")
    url = stack.start_service()
    console.print(f"service at {url} (log: {stack.service_log})")

    _step(3, "Create a tenant and log in with its first admin token")
    tenant = stack.bastion_json("tenant", "create", "demo-tenant")
    stack.bastion("login", "--url", url, "--token", tenant["token"])
    console.print(f"tenant {tenant['tenant_id']} created; token stored in {stack.env()['BASTION_CONFIG']} (0600)")

    _step(4, "Build OS 1.0.0 from the real device runtime and publish it as known-good")
    stack.bastion(
        "os", "build", "--version", "1.0.0", "--key", str(stack.vendor_dir / "os-signing.key"), "-o", str(os_image)
    )
    published = stack.bastion_json("os", "publish", str(os_image))
    console.print(f"OS {published['version']} published, measurement {published['measurement']}")

    _step(5, "Manufacture a device, flash OS 1.0.0 and claim it")
    stack.bastion("device", "manufacture", "--dir", str(device_dir), "--vendor", str(stack.vendor_dir))
    device_id = stack.bastion_json("device", "info", "--dir", str(device_dir))["device_id"]
    stack.bastion("device", "flash", "--dir", str(device_dir), "--os", str(os_image))
    stack.bastion("device", "claim", device_id)
    console.print(f"device {device_id} manufactured, flashed and claimed")

    _step(6, "Boot the device: ROM -> bootloader -> monitor + OS processes; the OS attests")
    boot = stack.bastion("device", "run", "--dir", str(device_dir), "--service", url, "--once")
    console.print(boot.stdout.rstrip())

    _step(7, "The device as the service sees it")
    console.print(stack.bastion("device", "show", device_id).stdout.rstrip())

    _step(8, "Verify the device certificate against the tenant CA with openssl")
    stack.bastion("tenant", "download-ca", "-o", str(tenant_ca))
    device_cert = device_dir / "os-state" / "device-cert.pem"
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tenant_ca), str(device_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    console.print(f"$ openssl verify -CAfile {tenant_ca} {device_cert}")
    console.print((verify.stdout + verify.stderr).rstrip())
    if verify.returncode != 0:
        raise CliError("openssl did not accept the device certificate", hint=f"inspect {device_cert}")


def _print_by_hand(stack: LocalStack) -> None:
    env = stack.env()
    console.print(
        "\n[bold]Run it by hand[/bold]\n"
        f"  export BASTION_HOME={env['BASTION_HOME']} BASTION_CONFIG={env['BASTION_CONFIG']}\n"
        "  bastion service run --port 8443                 # in one terminal\n"
        f"  bastion device run --dir {stack.device_dir('device-1')} --service http://127.0.0.1:8443\n"
        "  bastion device list                             # in another\n"
        "Or add --keep-running to `bastion demo` to leave this service up."
    )
