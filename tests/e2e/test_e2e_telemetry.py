"""End to end: the telemetry app publishes to a real Mosquitto that trusts the tenant CA.

A real service runs (``bastion service run``) with two tenants; a device of
each is manufactured, claimed and attested with ``bastion device run --once``,
so each holds a real 24 h device certificate from its tenant CA. Mosquitto is
started on free loopback ports: a TLS listener with ``require_certificate true``
and ``cafile`` = tenant A's CA (``bastion tenant download-ca``), and a plain
listener for the test's own ``mosquitto_sub``. It is stopped by PID.

First the app is the real example (``examples/apps/telemetry/main.py``) run as
its own process with its applibs socket, served by the real applibs server and
net.tls_connect handler over each device's real state directory:

* tenant A's device, DeviceAuthentication = tenant A: accepted, the message arrives;
* an app without DeviceAuthentication: denied by the OS (recorded), no connection;
* tenant B's device (DeviceAuthentication = tenant B): refused by the broker.

Then the whole path on running devices: each tenant packages the app with its
own key and deploys it; a long-lived ``bastion device run`` installs it and runs
it in its bubblewrap sandbox (no network of its own); tenant A's messages
arrive, tenant B's device is refused by the broker, and an app without
DeviceAuthentication is refused by the device's OS (recorded as app_denied).
The running-device tests run in file order (the last reuses tenant A's device).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _tls_pki import LOOPBACK, Ca, new_ca, server_credentials
from bastion.applibs._client import ENV_FD
from bastion.cli._localstack import LocalStack, free_port, wait_for
from bastion.images.manifest import validate_manifest
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.server import AppServer
from bastion.os.credentials import DeviceCredentialsService
from bastion.os.netbroker.broker import NetworkService, NetworkSettings
from bastion.os.state import StateDir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TELEMETRY = Path(__file__).resolve().parents[2] / "examples" / "apps" / "telemetry"
MOSQUITTO = "/usr/sbin/mosquitto"
TOPIC = "bastion/telemetry"
APP_TIMEOUT_S = 60


class Mosquitto:
    """A Mosquitto broker on two free loopback ports, stopped by PID."""

    def __init__(self, root: Path, *, client_ca: Path, cert: Path, key: Path) -> None:
        self.tls_port, self.plain_port = free_port(), free_port()
        self.log = root / "mosquitto.log"
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous true",  # the plain listener serves only the test's subscriber
                    "persistence false",
                    "user root" if os.geteuid() == 0 else "",  # keep the files in tmp readable
                    f"log_dest file {self.log}",
                    "log_type all",
                    f"listener {self.tls_port} {LOOPBACK}",
                    f"cafile {client_ca}",
                    f"certfile {cert}",
                    f"keyfile {key}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    f"listener {self.plain_port} {LOOPBACK}",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for("Mosquitto to listen", self._listening, timeout=20)

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise RuntimeError(f"mosquitto exited {self.process.returncode}: {stderr}{self.log_text()}")
        for port in (self.tls_port, self.plain_port):
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
            except OSError:
                return False
        return True

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # by PID: Popen signals its own child
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


@dataclass
class Subscriber:
    """``mosquitto_sub`` on the plain listener, printing ``topic payload`` lines to a file."""

    broker: Mosquitto
    out: Path
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        before = self.broker.log_text().count("Received SUBSCRIBE")
        with self.out.open("wb") as sink:
            self.process = subprocess.Popen(
                ["mosquitto_sub", "-h", LOOPBACK, "-p", str(self.broker.plain_port), "-t", f"{TOPIC}/#", "-v"],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        wait_for("the subscriber", lambda: self.broker.log_text().count("Received SUBSCRIBE") > before, timeout=20)

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass
class Device:
    dev: Path
    device_id: str
    tenant_id: str

    @property
    def state(self) -> StateDir:
        return StateDir(self.dev / "os-state")


@dataclass
class World:
    stack: LocalStack
    broker_ca: Ca
    broker: Mosquitto
    subscriber: Subscriber
    device_a: Device
    device_b: Device
    root: Path
    url: str
    os_image: Path


def _attested_device(stack: LocalStack, name: str, os_image: Path, url: str, operator: str) -> Device:
    dev = stack.device_dir(name)
    stack.bastion("device", "manufacture", "--dir", str(dev), "--vendor", str(stack.vendor_dir))
    stack.bastion("device", "flash", "--dir", str(dev), "--os", str(os_image))
    device_id = stack.bastion_json("device", "info", "--dir", str(dev))["device_id"]
    stack.bastion("device", "claim", "--dir", str(dev), operator=operator)
    result = stack.bastion("device", "run", "--dir", str(dev), "--service", url, "--once", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    tenant_id = json.loads((dev / "os-state" / "state.json").read_text())["tenant_id"]
    return Device(dev, device_id, tenant_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("e2e-telemetry")
    stack = LocalStack(root / "stack")
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"))
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"))
    url = stack.start_service()
    broker: Mosquitto | None = None
    subscriber: Subscriber | None = None
    try:
        for operator, name in (("a", "tenant-a"), ("b", "tenant-b")):
            tenant = stack.bastion_json("tenant", "create", name)
            stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant["token"], operator=operator)
        os_image = root / "os-1.0.0.img"
        stack.bastion(
            "os", "build", "--version", "1.0.0", "--key", str(stack.vendor_dir / "os-signing.key"), "-o", str(os_image)
        )
        stack.bastion("os", "publish", str(os_image), operator="a")
        stack.bastion("os", "publish", str(os_image), operator="b")
        device_a = _attested_device(stack, "device-a", os_image, url, "a")
        device_b = _attested_device(stack, "device-b", os_image, url, "b")
        assert device_a.tenant_id != device_b.tenant_id

        tenant_ca = root / "tenant-a-ca.pem"
        stack.bastion("tenant", "download-ca", "-o", str(tenant_ca), operator="a")
        broker_ca = new_ca("broker CA")
        cert, key = server_credentials(root, broker_ca)
        broker = Mosquitto(root, client_ca=tenant_ca, cert=cert, key=key)
        subscriber = Subscriber(broker, root / "received.txt")
        yield World(stack, broker_ca, broker, subscriber, device_a, device_b, root, url, os_image)
    finally:
        stack.stop_devices()
        if subscriber is not None:
            subscriber.stop()
        if broker is not None:
            broker.stop()
        stack.stop_service()


@dataclass
class AppRun:
    returncode: int
    stdout: str
    stderr: str
    records: list[tuple[str, str]]


def _run_app(world: World, device: Device, capabilities: dict[str, Any], name: str) -> AppRun:
    """Run the telemetry example as its own process; serve its applibs socket as the device OS does."""
    app_dir = world.root / f"app-{name}"
    shutil.copytree(TELEMETRY, app_dir)
    (app_dir / "broker-ca.pem").write_bytes(world.broker_ca.pem)
    raw = json.loads((TELEMETRY / "app_manifest.json").read_text())
    raw["Capabilities"] = capabilities
    manifest = validate_manifest(json.dumps(raw).encode())
    (app_dir / "app_manifest.json").write_text(json.dumps(raw))

    records: list[tuple[str, str]] = []
    net = NetworkService(NetworkSettings(bind_address=LOOPBACK))
    ctx = AppContext(
        component_id=manifest.component_id,
        version="1.0.0",
        manifest=manifest,
        storage_dir=app_dir,
        services={NetworkService: net, DeviceCredentialsService: DeviceCredentialsService(device.state)},
        record=lambda kind, detail: records.append((kind, detail)),
    )
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = AppServer(ctx, os_end)
    server.start()
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(app_dir / "main.py"),
                "--host",
                "localhost",
                "--port",
                str(world.broker.tls_port),
                "--count",
                "2",
                "--interval",
                "0.2",
            ],
            env={**os.environ, ENV_FD: str(app_end.fileno())},
            pass_fds=(app_end.fileno(),),
            capture_output=True,
            text=True,
            timeout=APP_TIMEOUT_S,
            check=False,
        )
    finally:
        app_end.close()
        server.close()
        net.close()
    return AppRun(result.returncode, result.stdout, result.stderr, records)


def _connections(world: World) -> int:
    return world.broker.log_text().count(f"New connection from {LOOPBACK}")


def test_tenant_device_publishes_through_device_authentication(world: World) -> None:
    device = world.device_a
    caps = {"AllowedConnections": ["localhost"], "DeviceAuthentication": device.tenant_id}
    run = _run_app(world, device, caps, "tenant-a")
    assert run.returncode == 0, run.stdout + run.stderr + world.broker.log_text()[-3000:]
    assert "the broker accepted the connection" in run.stdout
    assert "acknowledged" in run.stdout
    assert run.records == []
    line = wait_for(
        "the telemetry message at the subscriber",
        lambda: next((x for x in world.subscriber.lines() if x.startswith(f"{TOPIC}/")), None),
        timeout=20,
    )
    topic, _, payload = line.partition(" ")
    message = json.loads(payload)
    assert message["seq"] == 1
    assert topic == f"{TOPIC}/{message['component_id']}"
    # The broker authenticated the device by its certificate: the identity is the device ID.
    assert device.device_id in world.broker.log_text()


def test_app_without_device_authentication_is_denied_by_the_os(world: World) -> None:
    before = _connections(world)
    run = _run_app(world, world.device_a, {"AllowedConnections": ["localhost"]}, "no-device-auth")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "refused by the OS (DeviceAuthentication)" in run.stderr
    assert [kind for kind, _ in run.records] == ["app_denied"]
    assert "DeviceAuthentication" in run.records[0][1]
    time.sleep(0.5)
    assert _connections(world) == before  # the OS never connected


def test_device_of_another_tenant_is_refused_by_the_broker(world: World) -> None:
    device = world.device_b
    before = len(world.subscriber.lines())
    refusals = world.broker.log_text().count("certificate verify failed")
    caps = {"AllowedConnections": ["localhost"], "DeviceAuthentication": device.tenant_id}
    run = _run_app(world, device, caps, "tenant-b")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "the broker accepted the connection" not in run.stdout
    assert run.records == []  # the OS allowed it: the device's own tenant; the broker said no
    assert device.device_id not in world.broker.log_text()
    assert world.broker.log_text().count("certificate verify failed") == refusals + 1
    time.sleep(0.5)
    assert len(world.subscriber.lines()) == before


def test_the_app_never_saw_key_material(world: World) -> None:
    # The app's directory and outputs hold the broker CA only; the key stays in the OS state dir.
    key = (world.device_a.dev / "os-state" / "device-key.pem").read_bytes()
    for path in world.root.glob("app-*/**/*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data, path
            assert key not in data, path


# -- the whole path: packaged, deployed, installed and run in the sandbox of a running device --


def _app_dir(world: World, name: str, tenant_id: str | None, component_id: str) -> Path:
    app_dir = world.root / f"package-{name}"
    shutil.copytree(TELEMETRY, app_dir)
    (app_dir / "broker-ca.pem").write_bytes(world.broker_ca.pem)
    raw = json.loads((TELEMETRY / "app_manifest.json").read_text())
    raw["ComponentId"] = component_id
    raw["Capabilities"] = {"AllowedConnections": ["localhost"]}
    if tenant_id is not None:
        raw["Capabilities"]["DeviceAuthentication"] = tenant_id
    raw["CmdArgs"] = ["--host", "localhost", "--port", str(world.broker.tls_port), "--interval", "1"]
    (app_dir / "app_manifest.json").write_text(json.dumps(raw))
    return app_dir


def _deploy_on_a_running_device(world: World, operator: str, tenant_id: str, component_id: str) -> Path:
    """Package the app with the tenant's key, deploy it, and have a running device install it."""
    stack = world.stack
    keys = world.root / f"keys-{operator}"
    stack.bastion("keys", "create", "-o", str(keys), "--name", "apps")
    stack.bastion("keys", "register", str(keys / "apps.pub.pem"), operator=operator)
    stack.bastion("product", "create", "widget", operator=operator)
    image = world.root / f"telemetry-{operator}.img"
    app_dir = _app_dir(world, operator, tenant_id, component_id)
    stack.bastion("app", "package", str(app_dir), "--key", str(keys / "apps.key"), "-o", str(image))

    dev = stack.device_dir(f"running-{operator}")
    stack.bastion("device", "manufacture", "--dir", str(dev), "--vendor", str(stack.vendor_dir))
    stack.bastion("device", "flash", "--dir", str(dev), "--os", str(world.os_image))
    stack.bastion(
        "device", "provision", "--dir", str(dev), "--app-key", str(keys / "apps.pub.pem"), "--service", world.url
    )
    device_id = stack.bastion_json("device", "info", "--dir", str(dev))["device_id"]
    stack.bastion("device", "claim", "--dir", str(dev), operator=operator)
    stack.bastion("device", "assign", device_id, "--group", "widget/Field Test", operator=operator)
    stack.start_device(dev)
    wait_for("the device's first attestation", lambda: stack.device_ready(dev, "1.0.0"))
    added = stack.bastion_json("image", "add", str(image), operator=operator)
    stack.bastion(
        "deployment", "create", "--group", "widget/Field Test", "--image", str(added["id"]), operator=operator
    )
    _update_check(stack, dev)
    return dev


def _update_check(stack: LocalStack, dev: Path) -> None:
    result = stack.bastion("device", "update-check", "--dir", str(dev), "--json", check=False)
    assert json.loads(result.stdout).get("result") == "installed", result.stdout + result.stderr


def _app_log(dev: Path, component_id: str) -> str:
    path = dev / "os-state" / "apps" / f"{component_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_deployed_app_publishes_from_its_sandbox(world: World) -> None:
    component_id = str(uuid.uuid4())
    dev = _deploy_on_a_running_device(world, "a", world.device_a.tenant_id, component_id)
    line = wait_for(
        "the sandboxed app's message at the subscriber",
        lambda: next((x for x in world.subscriber.lines() if x.startswith(f"{TOPIC}/{component_id} ")), None),
        timeout=60,
    )
    assert json.loads(line.partition(" ")[2])["component_id"] == component_id
    log = _app_log(dev, component_id)
    assert "acknowledged" in log, log
    # It ran in its bubblewrap sandbox (no network namespace route), whose launcher confirmed the layers.
    apps = world.stack.bastion_json("device", "apps", "--dir", str(dev))
    app = next(a for a in apps if a["component_id"] == component_id)
    assert (app.get("sandbox") or {}).get("confirmed") is True, app
    assert app["layers"].startswith("bwrap uid="), app


def test_deployed_app_of_another_tenant_is_refused_by_the_broker(world: World) -> None:
    component_id = str(uuid.uuid4())
    refusals = world.broker.log_text().count("certificate verify failed")
    dev = _deploy_on_a_running_device(world, "b", world.device_b.tenant_id, component_id)
    wait_for("the app's report of the refusal", lambda: "the broker refused" in _app_log(dev, component_id), timeout=60)
    assert world.broker.log_text().count("certificate verify failed") > refusals
    assert not any(x.startswith(f"{TOPIC}/{component_id} ") for x in world.subscriber.lines())


def test_deployed_app_without_device_authentication_is_denied_on_the_device(world: World) -> None:
    stack = world.stack
    dev = stack.device_dir("running-a")  # tenant A's running device, from the test above
    component_id = str(uuid.uuid4())
    image = world.root / "telemetry-no-auth.img"
    app_dir = _app_dir(world, "no-auth", None, component_id)
    stack.bastion("app", "package", str(app_dir), "--key", str(world.root / "keys-a" / "apps.key"), "-o", str(image))
    added = stack.bastion_json("image", "add", str(image), operator="a")
    stack.bastion("deployment", "create", "--group", "widget/Field Test", "--image", str(added["id"]), operator="a")
    _update_check(stack, dev)
    wait_for(
        "the app's report of the OS's refusal",
        lambda: "refused by the OS (DeviceAuthentication)" in _app_log(dev, component_id),
        timeout=60,
    )
    # Recorded as a security event, reported to the service with the device's next status.
    events = dev / "os-state" / "events.json"
    device_id = stack.bastion_json("device", "info", "--dir", str(dev))["device_id"]

    def denied_seen() -> bool:
        queued = events.read_text() if events.exists() else ""
        history = stack.bastion_json("device", "show-deployment-status", device_id, operator="a").get("history", [])
        return "app_denied" in queued or any(e.get("kind") == "app_denied" for e in history)

    wait_for("the app_denied event", denied_seen, timeout=30)
    assert not any(x.startswith(f"{TOPIC}/{component_id} ") for x in world.subscriber.lines())
