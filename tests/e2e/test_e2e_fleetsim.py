"""End to end with the fleet simulator: simulated devices against a real ``bastion service run``.

The simulated chips are endorsed by a vendor the service trusts, claimed with
that vendor's vouchers, and speak the real protocols over loopback HTTP
(:mod:`bastion.sim`). The OS image they boot is a signed OS package published
with ``bastion os publish`` (a small payload: the simulator measures the file,
it does not run it).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.boot.vendor import Vendor, load_vendor
from bastion.cli._client import load_config
from bastion.cli._localstack import LocalStack
from bastion.crypto.keys import load_private_key_pem
from bastion.images.package import ImageType, build_image
from bastion.sim import FleetSimulator, OsImageFacts, RoundFigures, SimConfig

pytestmark = [pytest.mark.e2e]

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hello"
PRODUCT = "simlamp"
OS_VERSION = "1.0.0"


@dataclass
class SimWorld:
    stack: LocalStack
    url: str
    vendor: Vendor
    os_facts: OsImageFacts
    app_key: Path
    login: dict[str, Any]
    images: dict[str, str] = field(default_factory=dict)

    def build_app(self, version: str) -> Path:
        image = self.stack.root / f"hello-{version}.img"
        if not image.exists():
            self.stack.bastion(
                "app", "package", str(EXAMPLE_APP), "--key", str(self.app_key), "--version", version, "-o", str(image)
            )
        return image

    def add_app(self, version: str) -> str:
        if version not in self.images:
            self.images[version] = str(self.stack.bastion_json("image", "add", str(self.build_app(version)))["id"])
        return self.images[version]

    @contextlib.contextmanager
    def simulator(
        self, group: str, devices: int, *, seed: int, crash_rates: dict[str, float] | None = None
    ) -> Iterator[FleetSimulator]:
        base = self.url.rstrip("/")
        with (
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {self.login['token']}"}, timeout=30) as op,
            httpx.Client(base_url=base, timeout=30) as devs,
        ):
            config = SimConfig(devices=devices, group=group, seed=seed, concurrency=4, crash_rates=crash_rates or {})
            sim = FleetSimulator(config, operator=op, device_http=devs, vendor=self.vendor, os_image=self.os_facts)
            try:
                sim.setup()
                yield sim
            finally:
                sim.close()


def running(sim: FleetSimulator) -> Counter[str]:
    return Counter(apps.get(next(iter(apps), ""), "none") if apps else "none" for _d, apps in sim.running())


def os_package(vendor_dir: Path, path: Path, version: str) -> OsImageFacts:
    """A small signed OS package (vendor OS key): what the simulated chips boot."""
    key = load_private_key_pem((vendor_dir / "os-signing.key").read_bytes())
    with path.open("wb") as out:
        build_image(
            out,
            io.BytesIO(b"simulated bastion runtime " * 200 + version.encode()),
            image_type=ImageType.OS,
            component_id="00000000-0000-0000-0000-0000000000f5",
            version=version,
            security_version=1,
            key=key,
        )
    return OsImageFacts.read(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimWorld]:
    stack = LocalStack(tmp_path_factory.mktemp("e2e-fleetsim"), extra_env=ROLLOUT_ENV)
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"))
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"))
    url = stack.start_service()
    try:
        tenant = stack.bastion_json("tenant", "create", "simco")
        stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant["token"])
        keys = stack.root / "keys"
        stack.bastion("keys", "create", "-o", str(keys), "--name", "simco-apps")
        stack.bastion("keys", "register", str(keys / "simco-apps.pub.pem"))
        stack.bastion("product", "create", PRODUCT)
        image = stack.root / f"os-{OS_VERSION}.img"
        facts = os_package(stack.vendor_dir, image, OS_VERSION)
        stack.bastion("os", "publish", str(image))
        login = {"token": load_config(stack.root / "operators" / "default" / "config.json").token}
        yield SimWorld(stack, url, load_vendor(stack.vendor_dir), facts, keys / "simco-apps.key", login)
    finally:
        stack.stop_service()


#: Service settings that make a staged rollout fast enough for a test (the gate looks every second).
ROLLOUT_ENV: dict[str, str] = {"BASTION_ROLLOUT_GATE_INTERVAL_S": "1"}


def rounds_until(sim: FleetSimulator, done: Any, *, limit: int = 40) -> list[RoundFigures]:
    figures: list[RoundFigures] = []
    for _ in range(limit):
        figures.append(sim.round())
        if done():
            break
    return figures


def test_simulated_fleet_attests_installs_and_reports(world: SimWorld) -> None:
    """30 simulated devices attest, install the deployed v1 through TUF, and their status reports are accepted."""
    world.stack.bastion("deployment", "create", "--group", f"{PRODUCT}/Field Test", "--image", world.add_app("1.0.0"))
    with world.simulator(f"{PRODUCT}/Field Test", 30, seed=1) as sim:
        assert sim.claimed == 30
        first = sim.round()
        assert first.attested == 30, first.to_json()
        assert sum(first.installs.values()) == 30, first.to_json()
        assert first.status_reports["accepted"] == 30, first.to_json()
        second = sim.round()
        assert second.attested == 0  # the certificate is kept
        assert second.checks["up-to-date"] == 30, second.to_json()
        assert running(sim) == Counter({"1.0.0": 30})
        statuses = world.stack.bastion_json("deployment", "list")
        assert statuses


def test_same_seed_same_devices(world: SimWorld) -> None:
    """The seed fixes the device identities (a rerun claims nothing new)."""
    ids = []
    with world.simulator(f"{PRODUCT}/Field Test", 3, seed=1) as sim:
        ids = [d.device_id for d in sim.devices]
        assert sim.claimed == 0  # claimed by the first test's run of seed 1
    assert len(set(ids)) == 3


def test_fleet_simulate_cli(world: SimWorld) -> None:
    """``bastion fleet simulate --json`` runs the same fleet from the command line, with a crash rate."""
    image = world.stack.root / f"os-{OS_VERSION}.img"
    result = world.stack.bastion(
        "fleet", "simulate", "--vendor", str(world.stack.vendor_dir), "--os", str(image),
        "--group", f"{PRODUCT}/Field Test", "--devices", "12", "--rounds", "2", "--seed", "9",
        "--crash-rate", "1.0.0=0.5", "--json",
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["claimed"] == 12
    assert summary["rounds"][0]["attested"] == 12
    assert summary["running"] == {next(iter(summary["running"])): 12}
    crashed = summary["rounds"][1]["crashed_devices"]
    assert 0 < crashed < 12  # about half, fixed by the seed
    again = world.stack.bastion(
        "fleet", "simulate", "--vendor", str(world.stack.vendor_dir), "--os", str(image),
        "--group", f"{PRODUCT}/Field Test", "--devices", "12", "--rounds", "1", "--seed", "9",
        "--crash-rate", "1.0.0=0.5", "--json",
    )  # fmt: skip
    assert json.loads(again.stdout)["rounds"][0]["crashed_devices"] == crashed


# --- staged rollouts driven by the simulated fleet (issue 8 section 5 and 7) ---------------

ROLLOUT_DEVICES = 50
#: The first stage takes ~10 of 50 devices; a sample of 3 is enough for the gate to judge it.
STAGES = "20,50,100"
#: Longer than one check-in round of the 50 devices (a few seconds on a loaded machine), so a stage's
#: sample has reported before its soak can pass.
SOAK = "10s"
MIN_SAMPLE = "3"
#: Pause between check-in rounds (the service's gate looks every second, ROLLOUT_ENV).
ROUND_PAUSE_S = 0.5


def deployment(world: SimWorld, deployment_id: int) -> dict[str, Any]:
    return dict(world.stack.bastion_json("deployment", "show", str(deployment_id)))


def staged_deploy(world: SimWorld, group: str, image_id: str) -> int:
    created = world.stack.bastion_json(
        "deployment", "create", "--group", group, "--image", image_id,
        "--stages", STAGES, "--soak", SOAK, "--min-sample", MIN_SAMPLE,
    )  # fmt: skip
    return int(created["id"])


def drive(sim: FleetSimulator, until: Any, *, limit: int, history: list[Counter[str]]) -> None:
    """Run check-in rounds until ``until()`` holds (at most ``limit`` rounds), keeping what ran after each."""
    for _ in range(limit):
        sim.round()
        history.append(running(sim))
        if until():
            return
        time.sleep(ROUND_PAUSE_S)
    raise AssertionError(f"not reached in {limit} rounds; running: {history[-1]}")


def on_v1(world: SimWorld, sim: FleetSimulator, group: str) -> None:
    world.stack.bastion("deployment", "create", "--group", group, "--image", world.add_app("1.0.0"))
    history: list[Counter[str]] = []
    drive(sim, lambda: running(sim) == Counter({"1.0.0": ROLLOUT_DEVICES}), limit=3, history=history)


def test_crashing_v2_halts_at_the_first_stage_and_its_devices_go_back_to_v1(world: SimWorld) -> None:
    group = f"{PRODUCT}/Production"
    with world.simulator(group, ROLLOUT_DEVICES, seed=21, crash_rates={"2.0.0": 0.5}) as sim:
        on_v1(world, sim, group)
        deployment_id = staged_deploy(world, group, world.add_app("2.0.0"))
        history: list[Counter[str]] = []
        drive(sim, lambda: deployment(world, deployment_id)["rollout"]["state"] == "halted", limit=30, history=history)
        shown = deployment(world, deployment_id)["rollout"]
        assert shown["stage"] == 0, shown  # halted at its first stage, by itself
        assert shown["halt_reason"], shown
        first_stage = shown["stages"][0]["devices"]
        assert 3 <= first_stage < ROLLOUT_DEVICES // 2, shown
        assert max(h["2.0.0"] for h in history) <= first_stage  # v2 never went past the first stage
        # The halted stage is offered v1 again: its devices go back.
        drive(sim, lambda: running(sim) == Counter({"1.0.0": ROLLOUT_DEVICES}), limit=5, history=history)
        buckets = world.stack.bastion_json("error-report", "list", "--version", "2.0.0")
        assert buckets, "the crashes of 2.0.0 are in a bucket"


def test_healthy_v2_goes_through_every_stage(world: SimWorld) -> None:
    group = f"{PRODUCT}/Field Test OS Evaluation"
    with world.simulator(group, ROLLOUT_DEVICES, seed=22, crash_rates={"2.0.0": 0.5}) as sim:
        on_v1(world, sim, group)
        deployment_id = staged_deploy(world, group, world.add_app("2.1.0"))
        history: list[Counter[str]] = []
        drive(sim, lambda: running(sim) == Counter({"2.1.0": ROLLOUT_DEVICES}), limit=40, history=history)
        stage_sizes = sorted({h["2.1.0"] for h in history})
        assert len(stage_sizes) >= 3, stage_sizes  # it went through the stages, not at once
        wait_for_state(world, deployment_id, "completed")


def wait_for_state(world: SimWorld, deployment_id: int, state: str, *, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if deployment(world, deployment_id)["rollout"]["state"] == state:
            return
        time.sleep(0.5)
    raise AssertionError(f"rollout {deployment_id}: {deployment(world, deployment_id)['rollout']}")
