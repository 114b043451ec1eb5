"""End to end: renewable security with real processes on loopback.

The service runs as ``bastion service run``; the device runs as a long-lived
``bastion device run`` (boot, monitor, OS and its apps), and learns its device
group's TUF repository from its attestation. Updates are triggered with
``bastion device update-check``, which talks to the running OS.

One device goes through the issue's whole story in order: app v1 is deployed and
runs, v2 replaces it, OS 1.0.0 -> 1.1.0 is installed and confirmed, a broken
OS 1.2.0 rolls back by itself without raising the fuse counter. Before that
story, a second device shows that stolen online TUF keys cannot push an app the
tenant did not sign. (The other TUF attacks, which need a clock or a hand-made
repository, are reproduced in tests/service/test_tuf_attacks.py and
tests/unit/test_updates_agent.py.)
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.cli._localstack import LocalStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hello"
CRASHER_APP = EXAMPLE_APP.parent / "crasher"
CRASHER_ID = json.loads((CRASHER_APP / "app_manifest.json").read_text())["ComponentId"]
GROUP = "widget/Field Test"
#: The service's download credential lifetime here (BASTION_DOWNLOAD_CREDENTIAL_TTL; the product's is 60 s).
#: Above the device's reuse margin, so the device still keeps and reuses a credential for a while.
CREDENTIAL_TTL_S = 20


@dataclass
class RunningDevice:
    stack: LocalStack
    dev: Path
    device_id: str
    process: subprocess.Popen[bytes]

    def info(self) -> dict[str, Any]:
        return dict(self.stack.bastion_json("device", "info", "--dir", str(self.dev)))

    def update_check(self) -> dict[str, Any]:
        result = self.stack.bastion("device", "update-check", "--dir", str(self.dev), "--json", check=False)
        return dict(json.loads(result.stdout)) if result.stdout.strip() else {"stderr": result.stderr}

    def apps(self) -> list[dict[str, Any]]:
        return list(self.stack.bastion_json("device", "apps", "--dir", str(self.dev)))

    def app_log(self, component_id: str) -> str:
        path = self.dev / "os-state" / "apps" / f"{component_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def attested_on(self, version: str) -> bool:
        return self.stack.device_ready(self.dev, version)

    def os_log_tail(self, lines: int = 40) -> str:
        path = self.dev / "os-state" / "os.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class World:
    stack: LocalStack
    url: str
    app_key: Path
    app_pub: Path
    os_key: Path

    def build_os(self, version: str, security_version: int, *extra: str) -> Path:
        image = self.stack.root / f"os-{version}.img"
        if not image.exists():
            self.stack.bastion(
                "os", "build", "--version", version, "--security-version", str(security_version),
                "--key", str(self.os_key), "-o", str(image), *extra,
            )  # fmt: skip
        return image

    def build_app(self, version: str, *, key: Path | None = None) -> Path:
        image = self.stack.root / f"hello-{version}-{(key or self.app_key).stem}.img"
        self.stack.bastion(
            "app", "package", str(EXAMPLE_APP), "--key", str(key or self.app_key), "--version", version,
            "-o", str(image),
        )  # fmt: skip
        return image

    def deploy(self, image: Path) -> dict[str, Any]:
        added = self.stack.bastion_json("image", "add", str(image))
        return dict(self.stack.bastion_json("deployment", "create", "--group", GROUP, "--image", str(added["id"])))

    def start_device(self, name: str) -> RunningDevice:
        dev = self.stack.device_dir(name)
        vendor = str(self.stack.vendor_dir)
        self.stack.bastion("device", "manufacture", "--dir", str(dev), "--vendor", vendor)
        self.stack.bastion("device", "flash", "--dir", str(dev), "--os", str(self.build_os("1.0.0", 1)))
        self.stack.bastion(
            "device", "provision", "--dir", str(dev), "--app-key", str(self.app_pub), "--service", self.url
        )
        device_id = self.stack.bastion_json("device", "info", "--dir", str(dev))["device_id"]
        self.stack.bastion("device", "claim", "--dir", str(dev))
        self.stack.bastion("device", "assign", device_id, "--group", GROUP)
        device = RunningDevice(self.stack, dev, device_id, self.stack.start_device(dev))
        wait_for("the device's first attestation", lambda: device.attested_on("1.0.0"))
        return device


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    stack = LocalStack(
        tmp_path_factory.mktemp("e2e-updates"), extra_env={"BASTION_DOWNLOAD_CREDENTIAL_TTL": str(CREDENTIAL_TTL_S)}
    )
    # A short trial bound keeps a hung trial OS from stalling the suite.
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir), "--trial-timeout", "30")
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"))
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"))
    url = stack.start_service()
    try:
        tenant = stack.bastion_json("tenant", "create", "acme")
        stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant["token"])
        keys = stack.root / "keys"
        stack.bastion("keys", "create", "-o", str(keys), "--name", "acme-apps")
        stack.bastion("keys", "register", str(keys / "acme-apps.pub.pem"))
        stack.bastion("product", "create", "widget")
        os_key = stack.vendor_dir / "os-signing.key"
        world = World(stack, url, keys / "acme-apps.key", keys / "acme-apps.pub.pem", os_key)
        stack.bastion("os", "publish", str(world.build_os("1.0.0", 1)))
        yield world
    finally:
        stack.stop_service()


@pytest.fixture(scope="module")
def device(world: World) -> Iterator[RunningDevice]:
    running = world.start_device("story")
    try:
        yield running
    finally:
        running.stop()


def _history(world: World, device_id: str) -> list[dict[str, Any]]:
    shown = world.stack.bastion_json("device", "show", device_id)
    return list(shown.get("update_history", []))


def test_0_stolen_tuf_keys_cannot_push_an_app(world: World) -> None:
    from bastion.service.config import Settings
    from bastion.service.tuf import TargetSpec, publish_group

    # First, while the group offers only OS 1.0.0, so that this device has nothing else to do.
    device = world.start_device("attacked")
    try:
        group = world.stack.bastion_json("device-group", "show", GROUP)
        settings = Settings.from_env(world.stack.env())
        now = dt.datetime.now(dt.UTC)

        # Someone who stole the service's online TUF keys publishes an app that the
        # tenant's app key did not sign. TUF accepts it; the device must not.
        rogue_key_dir = world.stack.root / "rogue"
        world.stack.bastion("keys", "create", "-o", str(rogue_key_dir), "--name", "rogue")
        rogue = world.build_app("9.9.9", key=rogue_key_dir / "rogue.key")
        from bastion.service.blobs.store import BlobStore

        blob = BlobStore(settings.home / "blobs").put_bytes(rogue.read_bytes())
        manifest = json.loads((EXAMPLE_APP / "app_manifest.json").read_text())
        spec = TargetSpec(
            path=f"apps/{manifest['ComponentId'].lower()}/9.9.9.img",
            blob_sha256=blob.sha256,
            length=blob.size,
            custom={"bastion": {"image_type": "app", "component_id": manifest["ComponentId"].lower(),
                                "version": "9.9.9", "security_version": 1}},
        )  # fmt: skip
        publish_group(settings, group["id"], [spec], now=now)
        summary = device.update_check()
        assert summary.get("result") == "refused", (summary, device.os_log_tail())
        assert not any(a.get("version") == "9.9.9" for a in device.apps())
        refused = [e for e in _history(world, device.device_id) if e.get("kind") == "update_refused"]
        assert refused, "the refusal was reported to the service"
    finally:
        device.stop()
        shutil.rmtree(device.dev, ignore_errors=True)


def test_0b_a_running_device_that_is_revoked_gets_no_more_images(world: World) -> None:
    """Update eligibility (docs/adr/0013): once revoked, the download credential is refused, so no image arrives.

    The device keeps running; its TUF check-in still works (metadata is public)
    and sees the new target, but targets need a credential and the service now
    refuses it. (Its boot-time check downloaded test 0's rogue app with a
    credential, in good standing, and refused it by signature.) The service here issues
    credentials for CREDENTIAL_TTL_S (the setting that stands in for the product's 60 s),
    so the wait below outlives the one the device kept, as 46 s would with 60 s.
    """
    from bastion.os.updates.download_credential import CredentialSettings
    from bastion.service.blobs.store import BlobStore
    from bastion.service.config import Settings
    from bastion.service.tuf import TargetSpec, publish_group

    device = world.start_device("revoked")
    try:
        wait_for("the boot-time check", (device.dev / "os-state" / "updates.json").exists)
        world.stack.bastion("device", "revoke", device.device_id)
        group = world.stack.bastion_json("device-group", "show", GROUP)
        settings = Settings.from_env(world.stack.env())
        # Something new in the group (test 0's way: a target straight into the repository).
        image = world.build_app("9.9.10", key=world.stack.root / "rogue" / "rogue.key")
        blob = BlobStore(settings.home / "blobs").put_bytes(image.read_bytes())
        component = json.loads((EXAMPLE_APP / "app_manifest.json").read_text())["ComponentId"].lower()
        spec = TargetSpec(
            path=f"apps/{component}/9.9.10.img",
            blob_sha256=blob.sha256,
            length=blob.size,
            custom={"bastion": {"image_type": "app", "component_id": component, "version": "9.9.10",
                                "security_version": 1}},
        )  # fmt: skip
        publish_group(settings, group["id"], [spec], now=dt.datetime.now(dt.UTC))
        # Outlive any credential kept from the boot-time check: the device keeps one for its lifetime less
        # the reuse margin (with the product's 60 s lifetime that was a 46 s wait).
        time.sleep(CREDENTIAL_TTL_S - CredentialSettings().margin.total_seconds() + 1)
        summary = device.update_check()
        # The refusal names the revocation: its certificate is on the CRL (certificate_revoked) or, for a
        # certificate issued before the CRL record existed, the device itself (device_revoked).
        said = json.dumps(summary)
        assert "certificate_revoked" in said or "device_revoked" in said, (summary, device.os_log_tail())
        assert summary.get("result") != "installed", summary
        # It never got the bytes: had it, it would have refused 9.9.10 by its signature.
        refused = [e for e in _history(world, device.device_id) if e.get("version") == "9.9.10"]
        assert refused == [], refused
        events = world.stack.bastion_json("audit")
        denied = [e for e in events if e.get("action") == "device.download_credential" and e.get("outcome") == "denied"]
        assert denied, events[:5]
        assert denied[0]["actor"] == f"device:{device.device_id}"
    finally:
        device.stop()
        shutil.rmtree(device.dev, ignore_errors=True)


def test_1_app_v1_is_deployed_and_runs(world: World, device: RunningDevice) -> None:
    world.deploy(world.build_app("1.0.0"))
    summary = device.update_check()
    assert summary.get("result") == "installed", summary
    app = wait_for("app v1 running", lambda: [a for a in device.apps() if a.get("version") == "1.0.0"])[0]
    wait_for("app v1 heartbeat", lambda: "hello 1.0.0 heartbeat" in device.app_log(app["component_id"]))
    # It runs in its sandbox, whose launcher confirmed the layers.
    app = wait_for("app v1 layers", lambda: [a for a in device.apps() if (a.get("sandbox") or {}).get("confirmed")])[0]
    assert app["layers"].startswith("bwrap uid=")
    assert "landlock=" in app["layers"]


def test_2_app_v2_replaces_v1(world: World, device: RunningDevice) -> None:
    world.deploy(world.build_app("2.0.0"))
    summary = device.update_check()
    assert summary.get("result") == "installed", summary
    apps = wait_for("app v2 running", lambda: [a for a in device.apps() if a.get("version") == "2.0.0"])
    assert len(apps) == 1  # replaced, not added beside
    wait_for("app v2 heartbeat", lambda: "hello 2.0.0 heartbeat" in device.app_log(apps[0]["component_id"]))
    assert device.attested_on("1.0.0")  # only the app restarted: the OS did not reboot


def test_3_os_update_to_1_1_is_confirmed_and_raises_the_counter(world: World, device: RunningDevice) -> None:
    world.stack.bastion("os", "publish", str(world.build_os("1.1.0", 2)))
    summary = device.update_check()
    assert summary.get("result") == "reboot", summary
    wait_for("OS 1.1.0 attested", lambda: device.attested_on("1.1.0"))
    info = wait_for("the trial confirmed", lambda: (i := device.info())["trial_slot"] is None and i)
    assert info["active_slot"] == "B"
    assert info["counters"]["os"] == 2
    # The app came back on the new OS.
    wait_for("the app running on 1.1.0", lambda: any(a.get("version") == "2.0.0" for a in device.apps()))
    # The device reports the confirmation to the service after it happens.
    wait_for(
        "the confirmation reported to the service",
        lambda: "os_confirmed" in [e.get("kind") for e in _history(world, device.device_id)],
    )


def test_4_broken_os_rolls_back_by_itself(world: World, device: RunningDevice) -> None:
    broken = world.build_os("1.2.0", 3, "--fault", "fail-at-start")
    world.stack.bastion("os", "publish", str(broken))
    summary = device.update_check()
    assert summary.get("result") == "reboot", summary
    # The trial boot of 1.2.0 fails at start; the bootloader returns to 1.1.0.
    wait_for(
        "the rollback reported to the service",
        lambda: "os_rolled_back" in [e.get("kind") for e in _history(world, device.device_id)],
    )
    assert device.attested_on("1.1.0")
    info = device.info()
    assert info["active_slot"] == "B"
    assert info["counters"]["os"] == 2  # not raised to 1.2.0's security version
    # The broken version is not tried again.
    again = device.update_check()
    assert again.get("result") != "reboot", again
    status = world.stack.bastion_json("device", "show-deployment-status", device.device_id)
    assert json.dumps(status).count("1.1.0") >= 1


def test_5_a_closed_window_applies_at_the_next_check_in(world: World, device: RunningDevice) -> None:
    """Issue 7: a group's window change reaches the running device without a new attestation."""
    opens = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).strftime("%H:%M")
    world.stack.bastion("device-group", "update", GROUP, "--window-start", opens, "--window-minutes", "60")
    world.deploy(world.build_app("3.0.0"))
    summary = device.update_check()
    assert summary.get("result") == "maintenance_window", summary
    assert not any(a.get("version") == "3.0.0" for a in device.apps())
    world.stack.bastion("device-group", "update", GROUP, "--no-window")
    summary = device.update_check()
    assert summary.get("result") == "installed", summary
    wait_for("app v3 running", lambda: any(a.get("version") == "3.0.0" for a in device.apps()))


def test_5b_a_crash_on_the_device_lands_in_one_bucket_signed_by_it(world: World, device: RunningDevice) -> None:
    """Issue 8: the real OS captures a crash, queues it and uploads it signed; the service buckets it once."""
    crasher = world.stack.root / "crasher-1.0.0.img"
    world.stack.bastion(
        "app", "package", str(CRASHER_APP), "--key", str(world.app_key), "--version", "1.0.0", "-o", str(crasher)
    )  # fmt: skip
    hello = world.stack.bastion_json("image", "add", str(world.build_app("4.0.0")))  # beside the crasher
    added = world.stack.bastion_json("image", "add", str(crasher))
    world.stack.bastion(
        "deployment", "create", "--group", GROUP, "--image", str(hello["id"]), "--image", str(added["id"])
    )  # fmt: skip
    summary = device.update_check()
    assert summary.get("result") == "installed", summary
    wait_for("the crasher to crash once and recover", lambda: "recovered" in device.app_log(CRASHER_ID))

    def bucket() -> dict[str, Any] | None:
        device.update_check()  # a check-in uploads the queued reports (a crash also asks for one soon)
        rows = world.stack.bastion_json("error-report", "list", "--component", CRASHER_ID).get("items") or []
        return rows[0] if rows else None

    found = wait_for("the crash bucket", bucket)
    assert (found["event_count"], found["device_count"], found["state"]) == (1, 1, "open"), found
    assert found["title"].startswith("ValueError"), found
    # More check-ins upload nothing new: the acknowledged batch is gone from the device's queue.
    device.update_check()
    again = world.stack.bastion_json("error-report", "list", "--component", CRASHER_ID)["items"]
    assert again[0]["event_count"] == 1, again
    csv_file = world.stack.root / "errors.csv"
    world.stack.bastion("error-report", "download", "--format", "csv", "--since", "1d", "-o", str(csv_file))
    crashes = [line for line in csv_file.read_text().splitlines()[1:] if CRASHER_ID in line and ",AppCrash," in line]
    assert len(crashes) == 1, crashes  # its install is there too, as an Update row
    assert crashes[0].startswith(f"{device.device_id},AppCrash,Error,python_exception,1,"), crashes
    mine = [e for e in world.stack.bastion_json("audit") if e.get("actor") == f"device:{device.device_id}"]
    assert not [e for e in mine if e.get("action") == "device.error_report" and e.get("outcome") == "denied"], mine


def test_6_a_revoked_os_fails_the_next_attestation(world: World, device: RunningDevice) -> None:
    """Issue 7: `bastion os revoke`; the device running it is refused at its next attestation (a reboot)."""
    revoked = world.stack.bastion_json("os", "revoke", "1.1.0")
    assert [i["version"] for i in revoked] == ["1.1.0"]
    device.stop()
    device.process = world.stack.start_device(device.dev)

    def refused() -> dict[str, Any] | None:
        shown = world.stack.bastion_json("device", "show", device.device_id)
        attestations = shown.get("attestations") or []
        return attestations[0] if attestations and attestations[0].get("reason") == "os_revoked" else None

    last = wait_for("the attestation refused with os_revoked", refused)
    assert last["result"] == "failed"
