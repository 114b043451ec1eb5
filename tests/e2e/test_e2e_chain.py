"""End to end: the service and devices as separate processes on a random loopback port.

Each test drives the real ``bastion`` CLI. The service runs as ``bastion service
run`` with SQLite; each device boots with ``bastion device run`` (boot, monitor
and OS processes). Certificates are checked with ``openssl verify``.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.cli._localstack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class World:
    stack: LocalStack
    url: str
    os_v1: Path
    tenant_a: dict[str, str]
    tenant_b: dict[str, str]

    def new_device(self, name: str) -> tuple[Path, str]:
        dev = self.stack.device_dir(name)
        self.stack.bastion("device", "manufacture", "--dir", str(dev), "--vendor", str(self.stack.vendor_dir))
        self.stack.bastion("device", "flash", "--dir", str(dev), "--os", str(self.os_v1))
        return dev, self.stack.bastion_json("device", "info", "--dir", str(dev))["device_id"]

    def run_device(self, dev: Path) -> subprocess.CompletedProcess[str]:
        return self.stack.bastion("device", "run", "--dir", str(dev), "--service", self.url, "--once", check=False)

    def attestations(self, device_id: str) -> list[tuple[str, str]]:
        """The attestation records of a device, read straight from the service database."""
        with sqlite3.connect(self.stack.service_home / "service.db") as db:
            rows = db.execute(
                "SELECT result, reason FROM attestations WHERE device_id = ? ORDER BY id", (device_id,)
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    stack = LocalStack(tmp_path_factory.mktemp("e2e"))
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"))
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"))
    url = stack.start_service()
    try:
        tenant_a = stack.bastion_json("tenant", "create", "tenant-a")
        tenant_b = stack.bastion_json("tenant", "create", "tenant-b")
        stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant_a["token"], operator="a")
        stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant_b["token"], operator="b")
        os_v1 = stack.root / "os-1.0.0.img"
        stack.bastion(
            "os", "build", "--version", "1.0.0", "--key", str(stack.vendor_dir / "os-signing.key"), "-o", str(os_v1)
        )
        stack.bastion("os", "publish", str(os_v1), operator="a")
        yield World(stack, url, os_v1, tenant_a, tenant_b)
    finally:
        stack.stop_service()


def _claimed_device(world: World, name: str) -> tuple[Path, str]:
    dev, device_id = world.new_device(name)
    world.stack.bastion("device", "claim", "--dir", str(dev), operator="a")
    return dev, device_id


def test_device_attests_and_gets_a_certificate_openssl_accepts(world: World, tmp_path: Path) -> None:
    dev, device_id = _claimed_device(world, "good")
    result = world.run_device(dev)
    assert result.returncode == 0, result.stderr

    state = json.loads((dev / "os-state" / "state.json").read_text())
    # The OS ran from the image in the active slot, not from the installed tree.
    assert str(dev.resolve() / "run") in state["runtime_path"]

    ca = tmp_path / "tenant-a-ca.pem"
    world.stack.bastion("tenant", "download-ca", "-o", str(ca), operator="a")
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(dev / "os-state" / "device-cert.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert ": OK" in verify.stdout

    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(dev / "os-state" / "device-cert.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert device_id in text
    assert world.tenant_a["tenant_id"] in text
    assert "TLS Web Client Authentication" in text

    shown = world.stack.bastion_json("device", "show", device_id, operator="a")
    device = shown.get("device", shown)
    assert device["last_result"] == "ok"
    assert device["os_version"] == "1.0.0"
    assert world.attestations(device_id) == [("ok", "ok")]

    listed = world.stack.bastion_json("device", "list", operator="a")
    assert device_id in {d["device_id"] for d in listed}


def test_second_boot_attests_again_with_the_same_device_key(world: World) -> None:
    dev, device_id = _claimed_device(world, "reboot")
    assert world.run_device(dev).returncode == 0
    key_before = (dev / "os-state" / "device-key.pem").read_bytes()
    assert world.run_device(dev).returncode == 0
    assert (dev / "os-state" / "device-key.pem").read_bytes() == key_before
    assert [r for r, _ in world.attestations(device_id)] == ["ok", "ok"]


def test_unclaimed_device_gets_nothing_and_is_recorded(world: World) -> None:
    dev, device_id = world.new_device("unclaimed")
    result = world.run_device(dev)
    assert result.returncode != 0
    assert "device_unclaimed" in result.stdout + result.stderr
    assert not (dev / "os-state" / "device-cert.pem").exists()
    assert world.attestations(device_id) == [("failed", "device_unclaimed")]


def test_revoked_device_is_refused(world: World) -> None:
    dev, device_id = _claimed_device(world, "revoked")
    assert world.run_device(dev).returncode == 0
    world.stack.bastion("device", "revoke", device_id, operator="a")
    result = world.run_device(dev)
    assert result.returncode != 0
    assert "device_revoked" in result.stdout + result.stderr
    assert world.attestations(device_id)[-1] == ("failed", "device_revoked")


def test_os_that_is_not_known_good_is_refused(world: World) -> None:
    dev, device_id = _claimed_device(world, "unknown-os")
    unpublished = world.stack.root / "os-1.0.1.img"
    world.stack.bastion(
        "os",
        "build",
        "--version",
        "1.0.1",
        "--key",
        str(world.stack.vendor_dir / "os-signing.key"),
        "-o",
        str(unpublished),
    )
    world.stack.bastion("device", "flash", "--dir", str(dev), "--os", str(unpublished))
    result = world.run_device(dev)
    assert result.returncode != 0
    assert "unknown_os" in result.stdout + result.stderr
    assert world.attestations(device_id) == [("failed", "unknown_os")]


def test_os_known_good_for_another_tenant_only_is_refused(world: World) -> None:
    # Tenant B publishes an OS; tenant A's device running it is still refused.
    dev, device_id = _claimed_device(world, "other-tenant-os")
    image = world.stack.root / "os-1.0.2.img"
    world.stack.bastion(
        "os", "build", "--version", "1.0.2", "--key", str(world.stack.vendor_dir / "os-signing.key"), "-o", str(image)
    )
    world.stack.bastion("os", "publish", str(image), operator="b")
    world.stack.bastion("device", "flash", "--dir", str(dev), "--os", str(image))
    result = world.run_device(dev)
    assert result.returncode != 0
    assert world.attestations(device_id) == [("failed", "unknown_os")]


def test_tampered_os_image_does_not_boot(world: World) -> None:
    dev, _ = _claimed_device(world, "tampered")
    slot = dev / "flash" / "os_a.bin"
    data = bytearray(slot.read_bytes())
    data[len(data) // 2] ^= 0x01
    slot.write_bytes(bytes(data))
    result = world.run_device(dev)
    assert result.returncode != 0
    assert "recovery" in (result.stdout + result.stderr).lower()
    assert json.loads((dev / "recovery.json").read_text())
    assert not (dev / "os-state" / "device-cert.pem").exists()


def test_tenant_b_cannot_read_or_change_tenant_a_device(world: World) -> None:
    dev, device_id = _claimed_device(world, "isolation")
    for args in (
        ("device", "show", device_id),
        ("device", "revoke", device_id),
        ("device", "unclaim", device_id),
        ("device", "claim", "--dir", str(dev)),  # B holds the device, yet A has not released it
    ):
        result = world.stack.bastion(*args, operator="b", check=False)
        assert result.returncode != 0, args
    assert device_id not in {d["device_id"] for d in world.stack.bastion_json("device", "list", operator="b")}
    shown = world.stack.bastion_json("device", "show", device_id, operator="a")
    assert shown.get("device", shown)["revoked_at"] is None
    with sqlite3.connect(world.stack.service_home / "service.db") as db:
        denied = db.execute(
            "SELECT count(*) FROM audit_events WHERE outcome = 'denied' AND target LIKE ?", (f"%{device_id}%",)
        ).fetchone()[0]
    assert denied >= 2


def test_unclaim_release_and_transfer_with_fresh_proof(world: World) -> None:
    """Issue 7 §1: unclaim stops the certificate; a transfer is a release plus the new owner's own proof."""
    dev, device_id = _claimed_device(world, "transfer")
    assert world.run_device(dev).returncode == 0
    # Transfer without release: B holds the device, and still cannot take it.
    early = world.stack.bastion("device", "claim", "--dir", str(dev), operator="b", check=False)
    assert early.returncode != 0
    assert "already claimed" in early.stdout + early.stderr
    released = world.stack.bastion_json(
        "device", "release", device_id, "--to", world.tenant_b["tenant_id"], operator="a"
    )
    assert released["event"] == "release"
    # Between owners the device gets no certificate.
    assert world.run_device(dev).returncode != 0
    assert world.attestations(device_id)[-1] == ("failed", "device_unclaimed")
    world.stack.bastion("os", "publish", str(world.os_v1), operator="b", check=False)
    claimed = world.stack.bastion_json("device", "claim", "--dir", str(dev), operator="b")
    assert claimed["tenant_id"] == world.tenant_b["tenant_id"]
    assert world.run_device(dev).returncode == 0
    state = json.loads((dev / "os-state" / "state.json").read_text())
    assert state["tenant_id"] == world.tenant_b["tenant_id"]
    history = world.stack.bastion_json("device", "ownership", device_id, operator="a")
    assert [e["event"] for e in history] == ["release", "claim"]
    assert "release" in world.stack.bastion("device", "ownership", device_id, operator="b").stdout
    # B gives it up: no certificate for B any more either.
    world.stack.bastion("device", "unclaim", device_id, operator="b")
    assert world.run_device(dev).returncode != 0
    assert world.attestations(device_id)[-1] == ("failed", "device_unclaimed")
