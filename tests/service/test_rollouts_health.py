"""The rollout gate on real health data: devices send signed error-report batches through the real ingest, and the
gate reads ``errorreports.health`` (the default source). SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fastapi import FastAPI
from fleet_world import APP_COMPONENT, FakePublisher, Fleet, StatusDevice, make_status_device
from sqlalchemy.orm import Session, sessionmaker
from test_rollouts import app_targets, device_takes, install, members

from bastion.service.config import Settings
from bastion.service.models import Device
from bastion.service.rollouts.gate import evaluate_due
from bastion.service.rollouts.health import default_health
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient

DEVICES = 20


@pytest.fixture
def publisher(app: FastAPI) -> FakePublisher:
    fake = FakePublisher()
    app.state.tuf_publisher = fake
    return fake


def _send(
    client: TestClient, device: StatusDevice, now: dt.datetime, version: str, records: Sequence[Any] = ()
) -> None:
    body = batch(device, iat=now, installed=[(APP_COMPONENT, version)], records=list(records))
    r = client.post(ENDPOINT, content=body, headers=COSE)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("crashing", [True, False])
def test_the_gate_reads_real_error_reports(  # noqa: PLR0917 - pytest fixtures
    crashing: bool,
    client: TestClient,
    tenant: CreatedTenant,
    publisher: FakePublisher,
    session_factory: sessionmaker[Session],
    settings: Settings,
    master_key: bytes,
    clock: FakeClock,
) -> None:
    fleet = Fleet(client, tenant.admin_token, session_factory)
    group = fleet.groups["Production"]
    devices = {
        d.device_id: d
        for d in (
            make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
            for _ in range(DEVICES)
        )
    }
    with session_factory() as session:
        for device_id in devices:
            row = session.get(Device, device_id)
            assert row is not None
            row.group_id = group
        session.commit()
    v1, v2 = fleet.app("1.0.0"), fleet.app("2.0.0")
    fleet.deploy(group, str(v1["id"]))
    for device in devices.values():
        _send(client, device, clock(), "1.0.0")  # the check-in heartbeat: v1 is healthy on the whole group
    body = {
        "group": group,
        "images": [str(v2["id"])],
        "rollout": {"stages": [50, 100], "soak_seconds": 60, "halt": {"min_sample": 2}},
    }
    created = fleet.call("POST", "/deployments", json=body).json()
    stage1 = members(created["rollout"], 5000, sorted(devices))
    assert len(stage1) >= 2  # P(fewer) ~ 2e-5 for 20 devices at 50 %
    clock.advance(dt.timedelta(seconds=10))
    install(session_factory, tenant.tenant_id, stage1, "2.0.0", clock())
    for device_id in stage1:
        records = [crash(clock(), component=APP_COMPONENT, version="2.0.0")] if crashing else []
        _send(client, devices[device_id], clock(), "2.0.0", records)
    health = default_health()

    def gate() -> str:
        outcomes = evaluate_due(session_factory, settings, now=clock(), publisher=publisher, health=health)
        return outcomes[created["rollout"]["id"]].action

    if crashing:
        assert gate() == "halted"
        shown = fleet.call("GET", f"/deployments/{created['id']}").json()["rollout"]
        assert shown["halt_reason"].startswith("crash_drop:")
        assert shown["stages"][0]["health"][0]["crashed_devices"] == len(stage1)
        targets = app_targets(publisher, group)
        assert all(device_takes(targets, d) == "1.0.0" for d in devices)
    else:
        assert gate() == "soaking"
        clock.advance(dt.timedelta(seconds=60))
        assert gate() == "advanced"
        shown = fleet.call("GET", f"/deployments/{created['id']}").json()["rollout"]
        assert shown["stages"][0]["health"][0]["crash_free_rate"] == 1.0
        assert app_targets(publisher, group)["2.0.0"]["rollout"]["percent_bp"] == 10_000
