"""End to end: development mode and sideloading with real processes on loopback.

The service runs as ``bastion service run``; the device as a long-lived
``bastion device run`` (boot, monitor, OS and its apps) in ``widget/Field Test``,
where a deployment of the tenant's hello app waits. The story, in order:

1. without a capability, a sideload is refused and recorded;
2. ``enable-development --service`` has the service issue an appDevelopment
   capability for this device and installs it in the running OS, which attests
   at once: the monitor-signed EAT carries it, the service verifies it, marks the
   device in development mode and moves it to ``widget/Development``;
3. the developer's build of hello (signed by the developer key the capability
   lists) is sideloaded, runs, and its logs, stop and start work; an image signed
   by another key is refused;
4. the tenant's cloud deployment is not installed while in development mode;
5. ``disable-development``: the device attests without it, returns to Field Test,
   and takes the cloud app.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.cli._localstack import LocalStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hello"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, str]]:
    stack = LocalStack(tmp_path_factory.mktemp("e2e-devmode"))
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"))
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"))
    url = stack.start_service()
    try:
        tenant = stack.bastion_json("tenant", "create", "acme")
        stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant["token"])
        yield stack, url
    finally:
        stack.stop_devices()
        stack.stop_service()


def test_development_mode_story(stack: tuple[LocalStack, str]) -> None:
    local, url = stack
    keys = local.root / "keys"
    for name in ("acme-apps", "dev", "stranger"):
        local.bastion("keys", "create", "-o", str(keys), "--name", name)
    local.bastion("keys", "register", str(keys / "acme-apps.pub.pem"))
    local.bastion("product", "create", "widget")
    os_image = local.root / "os-1.0.0.img"
    os_key = local.vendor_dir / "os-signing.key"
    local.bastion(
        "os", "build", "--version", "1.0.0", "--security-version", "1", "--key", str(os_key), "-o", str(os_image)
    )
    local.bastion("os", "publish", str(os_image))
    groups = {g["name"]: g["id"] for g in local.bastion_json("device-group", "list")}

    def package(key: str, version: str) -> Path:
        image = local.root / f"hello-{version}-{key}.img"
        local.bastion(
            "app", "package", str(EXAMPLE_APP), "--key", str(keys / f"{key}.key"), "--version", version,
            "-o", str(image),
        )  # fmt: skip
        return image

    dev = local.device_dir("d1")
    local.bastion("device", "manufacture", "--dir", str(dev), "--vendor", str(local.vendor_dir))
    local.bastion("device", "flash", "--dir", str(dev), "--os", str(os_image))
    pub = str(keys / "acme-apps.pub.pem")
    local.bastion("device", "provision", "--dir", str(dev), "--app-key", pub, "--service", url)
    device_id = local.bastion_json("device", "info", "--dir", str(dev))["device_id"]
    local.bastion("device", "claim", "--dir", str(dev))
    local.bastion("device", "assign", device_id, "--group", "widget/Field Test")

    def shown() -> dict[str, Any]:
        return dict(local.bastion_json("device", "show", device_id))

    def update_check() -> dict[str, Any]:
        result = local.bastion("device", "update-check", "--dir", str(dev), "--json", check=False)
        return dict(json.loads(result.stdout))

    process: subprocess.Popen[bytes] = local.start_device(dev)
    try:
        wait_for("the first attestation", lambda: local.device_ready(dev, "1.0.0"))
        # 1. No capability: refused and recorded.
        refused = local.bastion("device", "sideload", "--dir", str(dev), str(package("dev", "1.0.1")), check=False)
        assert refused.returncode == 1
        assert "no_capability" in refused.stderr

        # 2. The service issues a capability for this device; the running OS installs it and attests at once.
        enabled = local.bastion_json(
            "device", "enable-development", "--dir", str(dev), "--service",
            "--developer-key", str(keys / "dev.pub.pem"),
        )  # fmt: skip
        assert enabled["kind"] == "appDevelopment"
        wait_for("development mode on the service", lambda: shown()["development_mode"] or None)
        assert shown()["group_id"] == groups["Development"]
        assert shown()["attestations"][0]["detail"].startswith("development mode: capability")

        # 3. The developer's build runs; logs, stop and start work; another key's image is refused.
        sideloaded = local.bastion_json("device", "sideload", "--dir", str(dev), str(package("dev", "1.0.1")))
        assert sideloaded["version"] == "1.0.1"

        def logs() -> str | None:
            out = local.bastion("device", "logs", "--dir", str(dev), "hello").stdout
            return out if out.strip() else None

        wait_for("the sideloaded app's output", logs)
        assert local.bastion_json("device", "stop", "--dir", str(dev), "hello")["pid"] is None
        assert local.bastion_json("device", "start", "--dir", str(dev), "hello")["pid"] is not None
        stranger = package("stranger", "1.0.2")
        refused = local.bastion("device", "sideload", "--dir", str(dev), str(stranger), check=False)
        assert refused.returncode == 1
        assert "(signature)" in refused.stderr

        # 4. A cloud deployment of a newer hello for Field Test does not reach a device in development mode.
        cloud = local.bastion_json("image", "add", str(package("acme-apps", "2.0.0")))
        local.bastion("deployment", "create", "--group", "widget/Field Test", "--image", str(cloud["id"]))
        assert update_check()["group_id"] == groups["Development"]
        assert [a["version"] for a in local.bastion_json("device", "apps", "--dir", str(dev))] == ["1.0.1"]

        # 5. Development mode off: the device attests without it, is back in Field Test, and takes the cloud app.
        local.bastion("device", "disable-development", "--dir", str(dev))
        wait_for("back in Field Test", lambda: (not shown()["development_mode"]) or None)
        assert shown()["group_id"] == groups["Field Test"]
        refused = local.bastion("device", "stop", "--dir", str(dev), "hello", check=False)
        assert "no_capability" in refused.stderr
        checked = update_check()
        assert checked["group_id"] == groups["Field Test"]
        assert checked["result"] == "installed", checked
        assert [a["version"] for a in local.bastion_json("device", "apps", "--dir", str(dev))] == ["2.0.0"]
        history = {e["kind"] for e in local.bastion_json("device", "show-deployment-status", device_id)["history"]}
        assert {"sideload_refused", "development_enabled", "app_sideloaded", "development_disabled"} <= history
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
