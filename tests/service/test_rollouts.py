"""Staged rollouts (issue 8 section 5): the gate halts a crashing release by itself and offers the previous one,
advances a healthy one through every stage, resumes and aborts, respects the minimum sample, and advances once
when two workers evaluate at the same time. SQLite and PostgreSQL, through the migrations.

Health data comes from :class:`FakeHealth`, an in-memory source with the signature of
``errorreports.health`` (the same interface the gate calls).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fleet_world import APP_COMPONENT, FakePublisher, Fleet, new_device_id
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.images.rollout import in_stage
from bastion.service.app import create_app
from bastion.service.config import Settings
from bastion.service.errors import ConfigError
from bastion.service.models import AuditEvent, Device, DeviceUpdateEvent, DeviceUpdateStatus, Rollout
from bastion.service.rollouts.gate import ROLLOUT_GATE_INTERVAL_S, evaluate_due, gate_interval_from_env
from bastion.service.rollouts.service import GATE_ACTOR, evaluate
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

DEVICES = 50
SOAK = 600
#: The first stage: 20 % of 50 devices (fewer than 2 devices in it has a probability of about 2e-4)
FIRST_BP = 2000


@dataclass(frozen=True)
class Health:
    devices: int
    crashed_devices: int
    crash_free_rate: float | None


@dataclass
class FakeHealth:
    """Which devices run which release, and which of them crashed; new buckets per release."""

    running: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    crashed: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    buckets: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def release_health(
        self,
        session: Session,
        tenant_id: str,
        *,
        component_id: str,
        version: str,
        since: dt.datetime,
        until: dt.datetime,
        group_id: str | None = None,
        device_ids: Collection[str] | None = None,
    ) -> Health:
        seen = self.running.get((component_id, version), set())
        if device_ids is not None:
            seen = seen & set(device_ids)
        crashed = len(seen & self.crashed.get((component_id, version), set()))
        return Health(len(seen), crashed, None if not seen else 1 - crashed / len(seen))

    def new_buckets(
        self,
        session: Session,
        tenant_id: str,
        *,
        component_id: str,
        version: str,
        since: dt.datetime,
        device_ids: Collection[str] | None = None,
    ) -> list[str]:
        return list(self.buckets.get((component_id, version), []))


@pytest.fixture
def publisher(app: FastAPI) -> FakePublisher:
    fake = FakePublisher()
    app.state.tuf_publisher = fake
    return fake


@pytest.fixture
def health(app: FastAPI) -> FakeHealth:
    fake = FakeHealth()
    app.state.rollout_health = fake
    return fake


@pytest.fixture
def fleet(
    client: TestClient, tenant: CreatedTenant, publisher: FakePublisher, session_factory: sessionmaker[Session]
) -> Fleet:
    return Fleet(client, tenant.admin_token, session_factory)


@dataclass
class World:
    fleet: Fleet
    group: str
    devices: list[str]
    v1: dict[str, Any]
    v2: dict[str, Any]


@pytest.fixture
def world(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock, health: FakeHealth
) -> World:
    group = fleet.groups["Production"]
    devices = sorted(new_device_id() for _ in range(DEVICES))
    with session_factory() as session:
        session.add_all(
            Device(device_id=d, tenant_id=tenant.tenant_id, claimed_at=clock(), claimed_by="test", group_id=group)
            for d in devices
        )
        session.commit()
    v1, v2 = fleet.app("1.0.0"), fleet.app("2.0.0")
    assert fleet.deploy(group, str(v1["id"])).status_code == 201
    health.running[(APP_COMPONENT, "1.0.0")] = set(devices)
    return World(fleet, group, devices, v1, v2)


@dataclass
class Ctx:
    """Everything a rollout test touches."""

    world: World
    publisher: FakePublisher
    health: FakeHealth
    sessions: sessionmaker[Session]
    settings: Settings
    clock: FakeClock
    tenant: CreatedTenant

    def parts(
        self,
    ) -> tuple[World, FakePublisher, FakeHealth, sessionmaker[Session], Settings, FakeClock, CreatedTenant]:
        return self.world, self.publisher, self.health, self.sessions, self.settings, self.clock, self.tenant


@pytest.fixture
def ctx(  # noqa: PLR0917 - pytest passes fixtures by position
    world: World,
    publisher: FakePublisher,
    health: FakeHealth,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
    tenant: CreatedTenant,
) -> Ctx:
    return Ctx(world, publisher, health, session_factory, settings, clock, tenant)


def staged_deploy(world: World, **halt: Any) -> dict[str, Any]:
    body = {
        "group": world.group,
        "images": [str(world.v2["id"])],
        "rollout": {"stages": [20, 50, 100], "soak_seconds": SOAK, "halt": {"min_sample": 2, **halt}},
    }
    r = world.fleet.call("POST", "/deployments", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def members(rollout: dict[str, Any], percent_bp: int, devices: list[str]) -> list[str]:
    return [d for d in devices if in_stage(d, rollout["seed"], percent_bp=percent_bp)]


def install(
    sessions: sessionmaker[Session], tenant_id: str, devices: Collection[str], version: str, now: dt.datetime
) -> None:
    """The devices report ``version`` of the app installed (their status row, as the status report writes it)."""
    with sessions() as session:
        for device_id in devices:
            row = session.get(DeviceUpdateStatus, device_id)
            if row is None:
                row = DeviceUpdateStatus(
                    device_id=device_id,
                    tenant_id=tenant_id,
                    os_version="1.0.0",
                    boot_slot="A",
                    last_report_iat=0,
                    reported_at=now,
                    installed=[],
                )
                session.add(row)
            row.installed = [{"component_id": APP_COMPONENT, "version": version}]
            row.reported_at = now
        session.commit()


def gate(
    sessions: sessionmaker[Session], settings: Settings, clock: FakeClock, publisher: FakePublisher, health: FakeHealth
) -> dict[int, str]:
    return {
        k: v.action
        for k, v in evaluate_due(sessions, settings, now=clock(), publisher=publisher, health=health).items()
    }


def app_targets(publisher: FakePublisher, group: str) -> dict[str, dict[str, Any]]:
    """Published app targets of the group: version -> custom.bastion."""
    return {
        t.custom["bastion"]["version"]: t.custom["bastion"]
        for t in publisher.published[group]
        if t.custom["bastion"]["image_type"] == "app"
    }


def device_takes(targets: dict[str, dict[str, Any]], device_id: str) -> str | None:
    """The version the device-side rule picks: the new one in the stage, else the fallback."""
    for version, meta in targets.items():
        marker = meta.get("rollout")
        if marker is None:
            return version
        chosen = in_stage(device_id, marker["seed"], percent_bp=marker["percent_bp"])
        if chosen != bool(marker.get("fallback")):
            return version
    return None


def test_a_crashing_v2_halts_at_stage_1_and_its_devices_are_offered_v1(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, tenant = ctx.parts()
    created = staged_deploy(world)
    rollout = created["rollout"]
    assert rollout["state"] == "running"
    assert [s["percent_bp"] for s in rollout["stages"]] == [FIRST_BP, 5000, 10000]
    stage1 = members(rollout, FIRST_BP, world.devices)
    assert 2 <= len(stage1) < DEVICES // 2
    targets = app_targets(publisher, world.group)
    assert targets["2.0.0"]["rollout"] == {"seed": rollout["seed"], "percent_bp": FIRST_BP}
    assert targets["1.0.0"]["rollout"] == {"seed": rollout["seed"], "percent_bp": FIRST_BP, "fallback": True}
    # The stage's devices (exactly those the devices pick themselves) get v2 and crash.
    assert {d for d in world.devices if device_takes(targets, d) == "2.0.0"} == set(stage1)
    clock.advance(dt.timedelta(minutes=1))
    install(session_factory, tenant.tenant_id, stage1, "2.0.0", clock())
    health.running[(APP_COMPONENT, "2.0.0")] = set(stage1)
    health.crashed[(APP_COMPONENT, "2.0.0")] = set(stage1)
    assert gate(session_factory, settings, clock, publisher, health) == {rollout["id"]: "halted"}
    shown = world.fleet.call("GET", f"/deployments/{created['id']}").json()["rollout"]
    assert shown["state"] == "halted"
    assert shown["stage"] == 0
    assert shown["halt_reason"].startswith("crash_drop:")
    assert shown["history"][-1]["event"] == "halted"
    assert shown["history"][-1]["by"] == GATE_ACTOR
    assert shown["stages"][0]["installed"] == len(stage1)
    assert shown["stages"][0]["health"][0]["crashed_devices"] == len(stage1)
    # Everyone, the stage's devices first, is offered v1 again.
    targets = app_targets(publisher, world.group)
    assert targets["2.0.0"]["rollout"]["percent_bp"] == 0
    assert all(device_takes(targets, d) == "1.0.0" for d in world.devices)
    with session_factory() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "rollout.halt")).one()
    assert audit.actor == GATE_ACTOR
    assert "crash_drop" in audit.detail
    # A halted rollout stays halted.
    clock.advance(dt.timedelta(seconds=SOAK * 2))
    assert gate(session_factory, settings, clock, publisher, health) == {}


def test_a_healthy_v2_goes_through_every_stage(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, tenant = ctx.parts()
    created = staged_deploy(world)
    rollout_id = created["rollout"]["id"]
    seen: list[str] = []
    for index, percent in enumerate([FIRST_BP, 5000, 10000]):
        stage = members(created["rollout"], percent, world.devices)
        targets = app_targets(publisher, world.group)
        assert targets["2.0.0"]["rollout"]["percent_bp"] == percent
        assert {d for d in world.devices if device_takes(targets, d) == "2.0.0"} == set(stage)
        assert gate(session_factory, settings, clock, publisher, health) == {rollout_id: "none"}  # nobody installed yet
        install(session_factory, tenant.tenant_id, stage, "2.0.0", clock())
        health.running[(APP_COMPONENT, "2.0.0")] = set(stage)
        seen.append(gate(session_factory, settings, clock, publisher, health)[rollout_id])
        clock.advance(dt.timedelta(seconds=SOAK - 1))
        assert gate(session_factory, settings, clock, publisher, health) == {rollout_id: "none"}  # still soaking
        clock.advance(dt.timedelta(seconds=1))
        seen.append(gate(session_factory, settings, clock, publisher, health)[rollout_id])
        shown = world.fleet.call("GET", f"/deployments/{created['id']}").json()["rollout"]
        assert shown["stages"][index]["installed"] == shown["stages"][index]["devices"] == len(stage)
    assert seen == ["soaking", "advanced", "soaking", "advanced", "soaking", "completed"]
    shown = world.fleet.call("GET", f"/deployments/{created['id']}").json()["rollout"]
    assert shown["state"] == "completed"
    assert [h["event"] for h in shown["history"]] == [
        "created",
        "soaking",
        "advanced",
        "soaking",
        "advanced",
        "soaking",
        "completed",
    ]
    # Completed: plain targets, no fallback.
    assert app_targets(publisher, world.group) == {
        "2.0.0": {"image_type": "app", "component_id": APP_COMPONENT, "version": "2.0.0", "security_version": 1}
    }


def test_a_stage_of_revoked_devices_does_not_wait_for_them_forever(ctx: Ctx) -> None:
    """Issue 9 §7: revoked devices get no update; a stage whose devices are all revoked soaks, then advances."""
    world, publisher, health, session_factory, settings, clock, _tenant = ctx.parts()
    created = staged_deploy(world)
    rollout_id = created["rollout"]["id"]
    stage1 = members(created["rollout"], FIRST_BP, world.devices)
    assert gate(session_factory, settings, clock, publisher, health) == {rollout_id: "none"}  # waits for an install
    for device_id in stage1:
        assert world.fleet.call("POST", f"/devices/{device_id}/revoke").status_code == 200
    assert gate(session_factory, settings, clock, publisher, health) == {rollout_id: "soaking"}
    shown = world.fleet.call("GET", f"/deployments/{created['id']}").json()
    assert shown["rollout"]["stages"][0]["devices"] == 0
    assert shown["counts"]["revoked"] == len(stage1)
    clock.advance(dt.timedelta(seconds=SOAK))
    assert gate(session_factory, settings, clock, publisher, health) == {rollout_id: "advanced"}


def test_min_sample_prevents_a_halt_on_a_tiny_sample(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, tenant = ctx.parts()
    created = staged_deploy(world, min_sample=DEVICES)
    stage1 = members(created["rollout"], FIRST_BP, world.devices)
    install(session_factory, tenant.tenant_id, stage1, "2.0.0", clock())
    health.running[(APP_COMPONENT, "2.0.0")] = set(stage1)
    health.crashed[(APP_COMPONENT, "2.0.0")] = set(stage1[:1])
    health.buckets[(APP_COMPONENT, "2.0.0")] = ["b" + "0" * 16]
    assert gate(session_factory, settings, clock, publisher, health) == {created["rollout"]["id"]: "soaking"}


def test_a_new_bucket_halts(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, _tenant = ctx.parts()
    created = staged_deploy(world, crash_drop_points=None)
    stage1 = members(created["rollout"], FIRST_BP, world.devices)
    health.running[(APP_COMPONENT, "2.0.0")] = set(stage1)
    health.buckets[(APP_COMPONENT, "2.0.0")] = ["b" + "1" * 16]
    assert gate(session_factory, settings, clock, publisher, health) == {created["rollout"]["id"]: "halted"}
    shown = world.fleet.call("GET", f"/deployments/{created['id']}").json()["rollout"]
    assert shown["halt_reason"].startswith("new_bucket: 1 new crash bucket")


def test_install_failures_past_n_halt(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, tenant = ctx.parts()
    created = staged_deploy(world, install_failures=1)
    stage1 = members(created["rollout"], FIRST_BP, world.devices)
    clock.advance(dt.timedelta(seconds=5))
    with session_factory() as session:
        for device_id in stage1[:2]:
            session.add(
                DeviceUpdateEvent(
                    device_id=device_id,
                    tenant_id=tenant.tenant_id,
                    at=clock(),
                    received_at=clock(),
                    kind="update_failed",
                    component_id=APP_COMPONENT,
                    version="2.0.0",
                    detail="no space",
                )
            )
        session.commit()
    assert gate(session_factory, settings, clock, publisher, health) == {created["rollout"]["id"]: "halted"}
    shown = world.fleet.call("GET", f"/deployments/{created['id']}").json()["rollout"]
    assert shown["halt_reason"].startswith("install_failures: 2 of 2 devices")


def test_resume_and_abort_are_audited_and_abort_sends_everyone_back(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, _tenant = ctx.parts()
    created = staged_deploy(world)
    deployment_id = created["id"]
    r = world.fleet.call("POST", f"/deployments/{deployment_id}/resume")
    assert r.status_code == 409
    assert r.json()["error"] == "rollout_not_halted"
    stage1 = members(created["rollout"], FIRST_BP, world.devices)
    health.running[(APP_COMPONENT, "2.0.0")] = set(stage1)
    health.crashed[(APP_COMPONENT, "2.0.0")] = set(stage1)
    gate(session_factory, settings, clock, publisher, health)
    reader = world.fleet.call("POST", "/tokens", json={"name": "r", "role": "reader"}).json()["token"]
    refused = world.fleet.client.post(f"/api/v1/deployments/{deployment_id}/resume", headers=bearer(reader))
    assert refused.status_code == 403
    health.crashed.clear()  # fixed in the field (say, a config change): resume
    clock.advance(dt.timedelta(minutes=5))
    resumed = world.fleet.call("POST", f"/deployments/{deployment_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["rollout"]["state"] == "running"
    assert resumed.json()["rollout"]["halt_reason"] is None
    assert app_targets(publisher, world.group)["2.0.0"]["rollout"]["percent_bp"] == FIRST_BP
    aborted = world.fleet.call("POST", f"/deployments/{deployment_id}/abort")
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["rollout"]["state"] == "aborted"
    targets = app_targets(publisher, world.group)
    assert all(device_takes(targets, d) == "1.0.0" for d in world.devices)
    again = world.fleet.call("POST", f"/deployments/{deployment_id}/abort")
    assert again.status_code == 409
    assert again.json()["error"] == "rollout_finished"
    assert [h["event"] for h in aborted.json()["rollout"]["history"]] == ["created", "halted", "resumed", "aborted"]
    with session_factory() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action.like("rollout.%")).order_by(AuditEvent.id)
        ).all()
    assert actions == ["rollout.halt", "rollout.resume", "rollout.abort"]
    plain = world.fleet.deploy(world.group, str(world.v1["id"])).json()
    assert plain["rollout"] is None
    none = world.fleet.call("POST", f"/deployments/{plain['id']}/abort")
    assert none.status_code == 404


def test_two_evaluators_advance_once(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, tenant = ctx.parts()
    created = staged_deploy(world)
    rollout_id = created["rollout"]["id"]
    stage1 = members(created["rollout"], FIRST_BP, world.devices)
    install(session_factory, tenant.tenant_id, stage1, "2.0.0", clock())
    health.running[(APP_COMPONENT, "2.0.0")] = set(stage1)
    assert gate(session_factory, settings, clock, publisher, health) == {rollout_id: "soaking"}
    clock.advance(dt.timedelta(seconds=SOAK))
    with session_factory() as first, session_factory() as second:
        a, b = first.get(Rollout, rollout_id), second.get(Rollout, rollout_id)
        assert a is not None
        assert b is not None
        assert a.version == b.version  # both workers read the same row
        one = evaluate(first, a, now=clock(), settings=settings, publisher=publisher, health=health)
        two = evaluate(second, b, now=clock(), settings=settings, publisher=publisher, health=health)
    assert (one.action, two.action) == ("advanced", "lost")
    shown = world.fleet.call("GET", f"/rollouts/{rollout_id}").json()
    assert shown["stage"] == 1
    assert [h["event"] for h in shown["history"]].count("advanced") == 1
    with session_factory() as session:
        assert len(session.scalars(select(AuditEvent).where(AuditEvent.action == "rollout.advance")).all()) == 1


def test_bad_rollout_requests_are_400(world: World) -> None:
    for rollout in (
        {"stages": [10, 5, 100]},
        {"stages": [10, 50]},
        {"stages": [0.001, 100]},
        {"stages": [10, 100], "halt": {"min_sample": 0}},
        {"stages": [10, 100], "soak_seconds": -1},
    ):
        r = world.fleet.call(
            "POST", "/deployments", json={"group": world.group, "images": [str(world.v2["id"])], "rollout": rollout}
        )
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"] in ("invalid_rollout", "invalid_request")


def test_a_staged_os_promotion_offers_the_previous_os_as_fallback(
    fleet: Fleet, publisher: FakePublisher, health: FakeHealth, session_factory: sessionmaker[Session]
) -> None:
    key = generate_private_key()
    fleet.os(key, "1.0.0")
    fleet.os(key, "1.1.0", feed="retail-eval")
    body = {"image": "1.1.0", "rollout": {"stages": [5, 100], "soak_seconds": 60}}
    promoted = fleet.call("POST", "/os-feeds/retail/images", json=body)
    assert promoted.status_code == 200, promoted.text
    ids = promoted.json()["rollouts"]
    assert len(ids) == 3  # one per group on retail: Development, Field Test, Production
    production = fleet.groups["Production"]
    os_targets = {
        t.custom["bastion"]["version"]: t.custom["bastion"]
        for t in publisher.published[production]
        if t.custom["bastion"]["image_type"] == "os" and "delta" not in t.custom
    }
    seed = os_targets["1.1.0"]["rollout"]["seed"]
    assert os_targets["1.1.0"]["rollout"] == {"seed": seed, "percent_bp": 500}
    assert os_targets["1.0.0"]["rollout"] == {"seed": seed, "percent_bp": 500, "fallback": True}
    shown = fleet.call("GET", f"/rollouts/{ids[0]}").json()
    assert shown["kind"] == "os"
    assert shown["previous"][0]["version"] == "1.0.0"
    assert fleet.call("POST", f"/rollouts/{ids[0]}/abort").json()["state"] == "aborted"


def test_openapi_documents_the_rollout_operations(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/deployments/{deployment_id}/resume",
        "/api/v1/deployments/{deployment_id}/abort",
        "/api/v1/rollouts/{rollout_id}/resume",
        "/api/v1/rollouts/{rollout_id}/abort",
    ):
        assert paths[path]["post"]["security"] == [{"bearerAuth": []}], path
        assert {"401", "403", "404"} <= set(paths[path]["post"]["responses"]), path
    assert "get" in paths["/api/v1/rollouts/{rollout_id}"]
    create = paths["/api/v1/deployments"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["$ref"].endswith("/DeploymentCreate")
    assert "rollout" in schema["components"]["schemas"]["DeploymentCreate"]["properties"]
    assert "RolloutSpec" in schema["components"]["schemas"]


def test_a_new_deployment_supersedes_an_unfinished_rollout(ctx: Ctx) -> None:
    world, publisher, health, session_factory, settings, clock, _tenant = ctx.parts()
    created = staged_deploy(world)
    replaced = world.fleet.deploy(world.group, str(world.v1["id"]))
    assert replaced.status_code == 201
    shown = world.fleet.call("GET", f"/rollouts/{created['rollout']['id']}").json()
    assert shown["state"] == "aborted"
    assert shown["history"][-1]["event"] == "superseded"
    assert gate(session_factory, settings, clock, publisher, health) == {}


def test_the_gate_runs_by_itself_in_the_app_lifespan(
    settings: Settings, clock: FakeClock, tenant: CreatedTenant, session_factory: sessionmaker[Session]
) -> None:
    app = create_app(settings, clock=clock, migrate_on_startup=False, rollout_gate_interval_s=0.05)
    app.state.tuf_publisher = FakePublisher()
    fake = FakeHealth()
    app.state.rollout_health = fake
    with TestClient(app) as client:
        fleet = Fleet(client, tenant.admin_token, session_factory)
        group = fleet.groups["Production"]
        devices = sorted(new_device_id() for _ in range(20))
        with session_factory() as session:
            session.add_all(
                Device(device_id=d, tenant_id=tenant.tenant_id, claimed_at=clock(), claimed_by="t", group_id=group)
                for d in devices
            )
            session.commit()
        v2 = fleet.app("2.0.0")
        body = {"group": group, "images": [str(v2["id"])], "rollout": {"stages": [50, 100], "halt": {"min_sample": 1}}}
        created = fleet.call("POST", "/deployments", json=body).json()
        stage = members(created["rollout"], 5000, devices)
        fake.running[(APP_COMPONENT, "2.0.0")] = set(stage)
        fake.crashed[(APP_COMPONENT, "2.0.0")] = set(stage)
        deadline = time.monotonic() + 10
        while fleet.call("GET", f"/rollouts/{created['rollout']['id']}").json()["state"] != "halted":
            assert time.monotonic() < deadline, "the gate did not halt the rollout by itself"
            time.sleep(0.05)


def test_another_tenants_rollout_is_not_found_and_audited(
    ctx: Ctx, make_tenant: Callable[[str], CreatedTenant], client: TestClient
) -> None:
    created = staged_deploy(ctx.world)
    other = make_tenant("globex")
    for method, path in (
        ("GET", f"/api/v1/rollouts/{created['rollout']['id']}"),
        ("POST", f"/api/v1/rollouts/{created['rollout']['id']}/abort"),
        ("POST", f"/api/v1/deployments/{created['id']}/abort"),
    ):
        r = client.request(method, path, headers=bearer(other.admin_token))
        assert r.status_code == 404, (path, r.text)
    shown = ctx.world.fleet.call("GET", f"/rollouts/{created['rollout']['id']}").json()
    assert shown["state"] == "running"
    with ctx.sessions() as session:
        denied = session.scalars(
            select(AuditEvent).where(AuditEvent.tenant_id == other.tenant_id, AuditEvent.action == "rollout.read")
        ).all()
    assert len(denied) == 2


def test_the_gate_interval_is_a_bounded_setting() -> None:
    assert gate_interval_from_env({}) == ROLLOUT_GATE_INTERVAL_S
    assert gate_interval_from_env({"BASTION_ROLLOUT_GATE_INTERVAL_S": "5"}) == 5.0
    for bad in ("0", "-1", "nan", "soon", "86400"):
        with pytest.raises(ConfigError):
            gate_interval_from_env({"BASTION_ROLLOUT_GATE_INTERVAL_S": bad})
