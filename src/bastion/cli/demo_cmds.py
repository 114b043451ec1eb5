"""``bastion demo``: the chain of trust and renewable security, as real processes.

Part one creates a vendor, starts the Security Service on loopback with SQLite,
creates a tenant, builds and publishes OS 1.0.0, manufactures a device, flashes
and claims it, boots it (boot, monitor and OS as their own processes) so that
it attests and receives its certificate, shows the device as the service sees
it, and checks the certificate with ``openssl verify``.

Part two keeps the device running and updates it: a sample app is deployed and
runs; OS 1.1.0 is published, installed in the other slot, trial-booted and
confirmed; a broken OS 1.2.0 is published and the device rolls back to 1.1.0 by
itself; the device's update history shows it all.

Part three is failure reporting and a staged rollout: the sample app
``crasher`` crashes once on the device, its signed report lands in a bucket
(``error-report list``) and in the CSV download; then 50 simulated devices
(:mod:`bastion.sim`, real protocols) take a staged rollout of a crashing 2.0.0,
which halts at its first stage by itself, and its devices go back to 1.0.0.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from bastion.cli._client import load_config
from bastion.cli._localstack import CommandFailedError, LocalStack, wait_for
from bastion.cli.apps import app
from bastion.cli.output import CliError, console, progress

__all__ = ["demo"]


def _step(number: int, text: str) -> None:
    console.print(f"\n[bold cyan]{number}.[/bold cyan] [bold]{text}[/bold]")


class _Stop(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM arrived: unwind through ``finally`` so every child process is stopped."""


#: The parts of the demo: ``service`` is steps 1-3 (vendor, service, tenant), ``chain``
#: adds the device and its certificate (steps 4-8), ``all`` is everything.
STEP_SETS = ("all", "chain", "service")


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Data directory for everything the demo makes (wiped first).")
    ] = Path(".bastion-demo"),
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running", help="Leave the service running at the end; Ctrl-C or SIGTERM stops it and every child."
        ),
    ] = False,
    steps: Annotated[
        str, typer.Option("--steps", help="Which part to run: all, chain (steps 1-8) or service (steps 1-3).")
    ] = "all",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Service port (0: a free one).")] = 0,
) -> None:
    """Run the chain of trust end to end: vendor, service, tenant, device, attestation, certificate."""
    if steps not in STEP_SETS:
        raise CliError(f"unknown --steps {steps[:20]!r}", hint="use one of: " + ", ".join(STEP_SETS))
    started = time.monotonic()
    if directory.exists():
        progress(f"removing the previous demo in {directory}")
        shutil.rmtree(directory)
    stack = LocalStack(directory, columns=console.width, extra_env=DEMO_ENV)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        _run(stack, steps=steps, port=port or None)
        if keep_running and stack.service is not None:
            _print_console(stack, live=True)
            console.print("The service keeps running; press Ctrl-C (or send SIGTERM) to stop it.", highlight=False)
            stack.service.wait()
    except (CommandFailedError, TimeoutError) as exc:
        raise CliError(
            f"a demo step failed: {exc}",
            hint=f"the service log is {stack.service_log}; re-run `make demo` after fixing the cause",
        ) from exc
    except (KeyboardInterrupt, _Stop):
        console.print("\nstopping the demo's processes")
    finally:
        # No new SIGTERM may cut the clean-up short; then every process the demo started goes.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.stop_devices()
            stack.stop_service()
        finally:
            signal.signal(signal.SIGTERM, previous)
    console.print(f"\n[green]Demo finished in {time.monotonic() - started:.1f}s.[/green]")
    _print_by_hand(stack)
    if not keep_running:
        _print_console(stack, live=False)


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _sign_in_hint(stack: LocalStack) -> str:
    env = stack.env()
    return (
        f"  BASTION_HOME={env['BASTION_HOME']} BASTION_CONFIG={env['BASTION_CONFIG']} \\\n"
        "    bastion token create --role admin --expires 8h   # prints a new token once; paste it into the page"
    )


def _print_console(stack: LocalStack, *, live: bool) -> None:
    """The console's URL and how to sign in (a command that prints a token; no token on a command line)."""
    if live and stack.url is not None:
        console.print(
            f"\n[bold]Console[/bold]: {stack.url}/console\n"
            f"Sign in with a token; print one with:\n{_sign_in_hint(stack)}",
            highlight=False,
            soft_wrap=True,
        )
        return
    console.print(
        "\n[bold]Console[/bold]: http://127.0.0.1:8443/console once `bastion service run --port 8443` runs "
        "(or `bastion demo --keep-running` keeps this one up).\nSign in with a token; print one with:\n"
        + _sign_in_hint(stack),
        highlight=False,
        soft_wrap=True,
    )


def _run(stack: LocalStack, *, steps: str = "all", port: int | None = None) -> None:
    root = stack.root
    device_dir = stack.device_dir("device-1")
    os_image = root / "os-1.0.0.img"
    tenant_ca = root / "tenant-ca.pem"

    _step(1, "Create the silicon vendor: CA, boot-signing key, OS-publisher key, signed bootloader")
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    console.print(f"vendor material in {stack.vendor_dir}")

    _step(2, "Start the Security Service on loopback (SQLite) and trust the vendor CA")
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"), "--name", "Demo Silicon")
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"), "--name", "Demo OS")
    url = stack.start_service(port=port)
    console.print(f"service at {url} (log: {stack.service_log})")

    _step(3, "Create a tenant and log in with its first admin token")
    tenant = stack.bastion_json("tenant", "create", "demo-tenant")
    stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant["token"])
    console.print(f"tenant {tenant['tenant_id']} created; token stored in {stack.env()['BASTION_CONFIG']} (0600)")
    if steps == "service":
        return

    _step(4, "Build OS 1.0.0 from the real device runtime and publish it as known-good")
    stack.bastion(
        "os", "build", "--version", "1.0.0", "--key", str(stack.vendor_dir / "os-signing.key"), "-o", str(os_image)
    )
    published = stack.bastion_json("os", "publish", str(os_image))
    console.print(f"OS {published['version']} published, measurement {published['measurement']}")

    _step(5, "Manufacture a device, flash OS 1.0.0 and claim it with proof (it signs a claim challenge)")
    stack.bastion("device", "manufacture", "--dir", str(device_dir), "--vendor", str(stack.vendor_dir))
    device_id = stack.bastion_json("device", "info", "--dir", str(device_dir))["device_id"]
    stack.bastion("device", "flash", "--dir", str(device_dir), "--os", str(os_image))
    stack.bastion("device", "claim", "--dir", str(device_dir))
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
    if steps == "chain":
        return
    _updates(stack, device_dir, device_id)


EXAMPLE_APP = Path(__file__).resolve().parents[3] / "examples" / "apps" / "hello"
GROUP = "demo-product/Field Test"


def _updates(stack: LocalStack, device_dir: Path, device_id: str) -> None:
    root = stack.root
    os_key = str(stack.vendor_dir / "os-signing.key")

    if not (EXAMPLE_APP / "app_manifest.json").is_file():
        raise CliError(
            f"the sample app is not at {EXAMPLE_APP}",
            hint="run the demo from a source checkout (`make demo`), where examples/apps/hello exists",
        )

    _step(9, "Create the tenant's app-signing key (only its public half goes to the service) and a product")
    stack.bastion("keys", "create", "-o", str(root / "keys"), "--name", "demo-apps")
    stack.bastion("keys", "register", str(root / "keys" / "demo-apps.pub.pem"))
    stack.bastion("product", "create", "demo-product")
    groups = stack.bastion_json("device-group", "list")
    console.print("device groups: " + ", ".join(sorted(g["name"] for g in groups)))
    stack.bastion("device", "assign", device_id, "--group", GROUP)
    stack.bastion(
        "device", "provision", "--dir", str(device_dir), "--app-key", str(root / "keys" / "demo-apps.pub.pem")
    )
    console.print(f"device assigned to {GROUP}; the app key is pinned on the device")

    _step(10, "Start the device for good: it attests at boot and learns its group's TUF repository")
    stack.start_device(device_dir)
    wait_for("the device to attest", lambda: stack.device_ready(device_dir, "1.0.0"))
    console.print("device running OS 1.0.0")

    _step(11, "Deploy the sample app 'hello' 1.0.0 and see it running")
    app_image = root / "hello-1.0.0.img"
    key = str(root / "keys" / "demo-apps.key")
    stack.bastion("app", "package", str(EXAMPLE_APP), "--key", key, "--version", "1.0.0", "-o", str(app_image))
    added = stack.bastion_json("image", "add", str(app_image))
    stack.bastion("deployment", "create", "--group", GROUP, "--image", str(added["id"]))
    _check(stack, device_dir)
    app = wait_for("the app to run", lambda: list(stack.bastion_json("device", "apps", "--dir", str(device_dir))))[0]
    log = device_dir / "os-state" / "apps" / f"{app['component_id']}.log"
    line = wait_for("a heartbeat", lambda: next((x for x in _lines(log) if "heartbeat" in x), None))
    console.print(f"app {app['component_id']} {app['version']} says: {line}")
    console.print(f"its sandbox: {app.get('layers', '')}")

    _refused_host(stack, device_dir, device_id, log)

    _step(13, "Publish OS 1.1.0: the device writes it to the other slot, trial-boots it and confirms it")
    stack.bastion(
        "os",
        "build",
        "--version",
        "1.1.0",
        "--security-version",
        "2",
        "--key",
        os_key,
        "-o",
        str(root / "os-1.1.0.img"),
    )
    stack.bastion("os", "publish", str(root / "os-1.1.0.img"))
    _check(stack, device_dir)
    wait_for("OS 1.1.0 to attest", lambda: stack.device_ready(device_dir, "1.1.0"))
    info = wait_for("the trial to be confirmed", lambda: _confirmed(stack, device_dir))
    console.print(
        f"running OS 1.1.0 from slot {info['active_slot']}; anti-rollback counter os = {info['counters']['os']}"
    )

    _step(14, "Publish a broken OS 1.2.0 (its runtime fails at start): the device rolls back by itself")
    broken = root / "os-1.2.0.img"
    stack.bastion(
        "os", "build", "--version", "1.2.0", "--security-version", "3", "--key", os_key, "-o", str(broken),
        "--fault", "fail-at-start",
    )  # fmt: skip
    stack.bastion("os", "publish", str(broken))
    _check(stack, device_dir)
    wait_for("the rollback to be reported", lambda: "os_rolled_back" in _history_kinds(stack, device_id))
    wait_for("OS 1.1.0 to run again", lambda: stack.device_ready(device_dir, "1.1.0"))
    info = stack.bastion_json("device", "info", "--dir", str(device_dir))
    console.print(f"back on OS 1.1.0 in slot {info['active_slot']}; counter os = {info['counters']['os']} (not raised)")

    _step(15, "The device's update history, as the service recorded it")
    console.print(stack.bastion("device", "show-deployment-status", device_id).stdout.rstrip())
    _failures(stack, device_dir, hello_id=str(added["id"]))


#: The service's rollout gate looks every 2 s in the demo (30 s by default).
DEMO_ENV = {"BASTION_ROLLOUT_GATE_INTERVAL_S": "2"}
CRASHER_APP = EXAMPLE_APP.parent / "crasher"
FLEET_GROUP = "demo-product/Production"
FLEET_DEVICES = 50
#: The demo's staged rollout: a first stage of ~10 % of the 50 simulated devices, a short soak.
FLEET_STAGES, FLEET_SOAK, FLEET_MIN_SAMPLE = "10,50,100", "20s", "3"
#: Pause between the simulated fleet's check-in rounds.
FLEET_ROUND_PAUSE_S = 1.0


def _failures(stack: LocalStack, device_dir: Path, *, hello_id: str) -> None:
    """Steps 16-19: a crash report, its bucket and CSV, then a staged rollout that halts itself."""
    root = stack.root
    key = str(root / "keys" / "demo-apps.key")
    _step(16, "Deploy the sample app 'crasher' 1.0.0 beside hello: it crashes once, and the device reports it")
    crasher = {}
    for version in ("1.0.0", "2.0.0"):
        image = root / f"crasher-{version}.img"
        stack.bastion("app", "package", str(CRASHER_APP), "--key", key, "--version", version, "-o", str(image))
        crasher[version] = str(stack.bastion_json("image", "add", str(image))["id"])
    stack.bastion("deployment", "create", "--group", GROUP, "--image", hello_id, "--image", crasher["1.0.0"])
    _check(stack, device_dir)
    log = device_dir / "os-state" / "apps" / "9d3c6a52-41e7-4b0f-8c2a-6e15f07b3d90.log"
    wait_for("the crasher to recover", lambda: next((x for x in _lines(log) if "recovered" in x), None))

    def bucket() -> dict[str, Any] | None:
        _check(stack, device_dir)  # a check-in uploads the queued error reports
        page = stack.bastion_json("error-report", "list", "--component", "9d3c6a52-41e7-4b0f-8c2a-6e15f07b3d90")
        rows = page.get("items") or []
        return rows[0] if rows else None

    found = wait_for("the crash bucket", bucket)
    console.print(stack.bastion("error-report", "list").stdout.rstrip())
    console.print(f"bucket {found.get('id', found.get('bucket_id'))}: the crash, signed by the device's certified key")

    _step(17, "Download the error reports as CSV (Azure Sphere's columns, then Bastion's)")
    csv_file = root / "error-reports.csv"
    stack.bastion("error-report", "download", "--format", "csv", "--since", "1d", "-o", str(csv_file))
    lines = _lines(csv_file)
    console.print(f"$ head -3 {csv_file}\n" + "\n".join(lines[:3]))
    console.print(f"{max(len(lines) - 1, 0)} row(s)")
    _rollout(stack, crasher)


def _rollout(stack: LocalStack, crasher: dict[str, str]) -> None:
    from bastion.boot.vendor import load_vendor
    from bastion.sim import FleetSimulator, OsImageFacts, SimConfig

    _step(18, f"{FLEET_DEVICES} simulated devices (real attestation, TUF, signed reports) join {FLEET_GROUP} on 1.0.0")
    stack.bastion("deployment", "create", "--group", FLEET_GROUP, "--image", crasher["1.0.0"])
    login = load_config(Path(stack.env()["BASTION_CONFIG"]))
    config = SimConfig(devices=FLEET_DEVICES, group=FLEET_GROUP, seed=1, concurrency=4, crash_rates={"2.0.0": 0.5})
    base = str(stack.url)
    with (
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {login.token}"}, timeout=30) as operator,
        httpx.Client(base_url=base, timeout=30) as devices,
    ):
        sim = FleetSimulator(
            config,
            operator=operator,
            device_http=devices,
            vendor=load_vendor(stack.vendor_dir),
            os_image=OsImageFacts.read(stack.root / "os-1.0.0.img"),
        )
        sim.setup(progress=progress)
        try:
            _halting_rollout(stack, sim, crasher)
        finally:
            sim.close()


def _versions(sim: Any) -> Counter[str]:
    return Counter(next(iter(apps.values()), "none") for _device, apps in sim.running())


def _halting_rollout(stack: LocalStack, sim: Any, crasher: dict[str, str]) -> None:
    sim.round()
    sim.round()
    console.print(f"running: {dict(_versions(sim))}")
    _step(
        19,
        f"A staged rollout of a crashing crasher 2.0.0 (stages {FLEET_STAGES}, soak {FLEET_SOAK}): it halts by itself",
    )
    created = stack.bastion_json(
        "deployment", "create", "--group", FLEET_GROUP, "--image", crasher["2.0.0"],
        "--stages", FLEET_STAGES, "--soak", FLEET_SOAK, "--min-sample", FLEET_MIN_SAMPLE,
    )  # fmt: skip
    deployment_id = str(created["id"])
    stop = threading.Event()
    peak = Counter[str]()

    def fleet() -> None:
        while not stop.is_set():
            sim.round()
            now = _versions(sim)
            peak["2.0.0"] = max(peak["2.0.0"], now["2.0.0"])
            stop.wait(FLEET_ROUND_PAUSE_S)

    worker = threading.Thread(target=fleet, name="demo-fleet", daemon=True)
    worker.start()
    try:

        def halted() -> dict[str, Any] | None:
            rollout = stack.bastion_json("deployment", "show", deployment_id).get("rollout") or {}
            return rollout if rollout.get("state") == "halted" else None

        rollout = wait_for("the rollout to halt", halted)
        console.print(
            f"halted at stage {int(rollout['stage']) + 1} of {len(rollout['stages'])} "
            f"({rollout['stages'][0]['devices']} devices): {rollout.get('halt_reason')}"
        )
        console.print(stack.bastion("deployment", "show", deployment_id).stdout.rstrip())
        wait_for("its devices to go back to 1.0.0", lambda: _versions(sim) == Counter({"1.0.0": FLEET_DEVICES}))
        console.print(f"at most {peak['2.0.0']} device(s) ever ran 2.0.0; all {FLEET_DEVICES} run crasher 1.0.0 again")
    finally:
        stop.set()
        worker.join()


def _refused_host(stack: LocalStack, device_dir: Path, device_id: str, log: Path) -> None:
    """Step 12: the sandboxed app is refused a host its manifest does not list, and the refusal is recorded."""
    _step(12, "The app asks for example.com, which its manifest does not list: the OS refuses and records it")
    refusal = wait_for("the refusal", lambda: next((x for x in _lines(log) if "refused example.com" in x), None))
    console.print(f"app log: {refusal}")
    _check(stack, device_dir)  # a check-in carries the queued events to the service
    wait_for("the refusal to reach the service", lambda: "app_denied" in _history_kinds(stack, device_id))
    console.print("the service's device history holds the app_denied security event")


def _check(stack: LocalStack, device_dir: Path) -> None:
    summary = stack.bastion_json("device", "update-check", "--dir", str(device_dir))
    installed = ", ".join(f"{i.get('component_id', '')} {i.get('version', '')}".strip() for i in summary["installed"])
    console.print(f"update check: {summary['result']}" + (f" ({installed})" if installed else ""))


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def _confirmed(stack: LocalStack, device_dir: Path) -> dict[str, Any] | None:
    info: dict[str, Any] = stack.bastion_json("device", "info", "--dir", str(device_dir))
    return info if info.get("trial_slot") is None else None


def _history_kinds(stack: LocalStack, device_id: str) -> list[str]:
    shown = stack.bastion_json("device", "show", device_id)
    return [str(event.get("kind")) for event in shown.get("update_history", [])]


def _print_by_hand(stack: LocalStack) -> None:
    env = stack.env()
    console.print(
        "\n[bold]Run it by hand[/bold]\n"
        f"  export BASTION_HOME={env['BASTION_HOME']} BASTION_CONFIG={env['BASTION_CONFIG']} "
        f"XDG_CONFIG_HOME={env['XDG_CONFIG_HOME']}\n"
        "  bastion service run --port 8443                 # in one terminal: it runs until stopped\n"
        f"  bastion device run --dir {stack.device_dir('device-1')} --service http://127.0.0.1:8443"
        "   # in a second one: so does this\n"
        "  bastion device list                             # in a third, with the same variables exported\n"
        f"  bastion device update-check --dir {stack.device_dir('device-1')}\n"
        "Or add --keep-running to `bastion demo` to leave this service up."
    )
