"""``bastion fleet simulate``: run simulated devices against the logged-in service.

The devices speak the real device protocols (:mod:`bastion.sim`); the command
uses the saved login only for the operator steps (claim with vendor vouchers,
group assignment). The vendor directory must be one the service trusts
(``bastion service trust-vendor DIR/ca.pem``), and the OS image one it knows
(``bastion os publish``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from bastion.cli._client import HTTP_TIMEOUT_S, load_config
from bastion.cli.apps import fleet_app
from bastion.cli.output import JsonOption, emit_table, fail, progress

__all__ = ["simulate_cmd"]

#: Bounds of the command's options.
MAX_ROUNDS = 1000
MAX_INTERVAL_S = 3600.0


@fleet_app.command("simulate")
def simulate_cmd(  # noqa: PLR0917 - typer reads the options from the signature
    vendor_dir: Annotated[Path, typer.Option("--vendor", help="Vendor directory whose CA endorses the chips.")],
    os_image: Annotated[Path, typer.Option("--os", help="The published OS image the simulated chips boot.")],
    group: Annotated[str, typer.Option("--group", help='Device group: "PRODUCT/GROUP" or its ID.')],
    devices: Annotated[int, typer.Option("--devices", min=1, max=5000, help="How many devices.")] = 100,
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=MAX_ROUNDS, help="Check-in rounds.")] = 3,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, max=MAX_INTERVAL_S, help="Seconds between rounds.")
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same devices and crashes.")] = 0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Devices checking in at once.")] = 8,
    crash_rate: Annotated[
        list[str] | None,
        typer.Option(
            "--crash-rate", help="VERSION=RATE (or COMPONENT@VERSION=RATE): fraction of devices it crashes on."
        ),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Keep the devices' state here (default: a temporary directory).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run simulated devices (real attestation, TUF check-ins, signed status and error reports)."""
    from bastion.boot.errors import BootError
    from bastion.boot.vendor import load_vendor
    from bastion.sim import FleetSimulator, OsImageFacts, SimConfig, SimError, parse_crash_rates

    login = load_config()
    verify: bool | str = login.ca_file if login.ca_file else True
    try:
        vendor = load_vendor(vendor_dir)
        facts = OsImageFacts.read(os_image)
        config = SimConfig(
            devices=devices,
            group=group,
            seed=seed,
            concurrency=concurrency,
            crash_rates=parse_crash_rates(crash_rate or []),
            workdir=workdir,
        )
    except (SimError, BootError) as exc:
        fail(str(exc), hint="see `bastion fleet simulate --help`")
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    with (
        httpx.Client(
            base_url=login.url.rstrip("/"),
            headers={"Authorization": f"Bearer {login.token}"},
            timeout=HTTP_TIMEOUT_S,
            verify=verify,
        ) as operator,
        httpx.Client(base_url=login.url.rstrip("/"), timeout=HTTP_TIMEOUT_S, verify=verify, limits=limits) as devs,
    ):
        sim = FleetSimulator(config, operator=operator, device_http=devs, vendor=vendor, os_image=facts)
        try:
            sim.setup(progress=progress)
            figures: list[dict[str, Any]] = []
            for number in range(rounds):
                if number and interval:
                    time.sleep(interval)
                result = sim.round()
                figures.append(result.to_json())
                progress(_line(result.to_json()))
        except SimError as exc:
            fail(
                str(exc),
                hint="check the login's role (contributor or admin), the group, and that the vendor is trusted",
            )
        finally:
            sim.close()
    final = figures[-1]
    if as_json:
        summary = {"devices": devices, "claimed": sim.claimed, "seed": seed, "os_version": facts.version}
        sys.stdout.write(json.dumps(summary | {"rounds": figures, "running": final["running"]}, indent=2) + "\n")
        return
    rows = [
        {
            "round": f["round"],
            "attested": f["attested"],
            "installs": sum(f["installs"].values()),
            "crashed": f["crashed_devices"],
            "status ok": f["status_reports"].get("accepted", 0),
            "errors ok": f["error_reports"].get("accepted", 0) + f["error_reports"].get("duplicate", 0),
            "refused": sum(f["attest_refused"].values()),
            "seconds": f["seconds"],
        }
        for f in figures
    ]
    columns = ["round", "attested", "installs", "crashed", "status ok", "errors ok", "refused", "seconds"]
    emit_table(rows, columns, as_json=False, title=f"fleet simulation: {devices} devices, seed {seed}")
    running = [{"release": k, "devices": v} for k, v in final["running"].items()]
    emit_table(running, ["release", "devices"], as_json=False, title="running after the last round")


def _line(f: dict[str, Any]) -> str:
    installs = ", ".join(f"{k} x{v}" for k, v in sorted(f["installs"].items())) or "none"
    running = ", ".join(f"{k} x{v}" for k, v in sorted(f["running"].items())) or "nothing"
    return (
        f"round {f['round']}: {f['devices']} devices in {f['seconds']:.1f}s, attested {f['attested']}, "
        f"installed {installs}, crashed {f['crashed_devices']}, running {running}, "
        f"status {dict(f['status_reports'])}, error reports {dict(f['error_reports'])}"
    )
