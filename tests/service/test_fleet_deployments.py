"""Deployments: targets per update policy, tenant isolation, the current deployment, per-device state counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fleet_world import (
    APP2_COMPONENT,
    APP_COMPONENT,
    OS_COMPONENT,
    FakePublisher,
    Fleet,
    StatusDevice,
    event,
    make_status_device,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.service.models import AuditEvent
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient

COSE = {"Content-Type": "application/cose"}


@pytest.fixture
def publisher(app: FastAPI) -> FakePublisher:
    fake = FakePublisher()
    app.state.tuf_publisher = fake
    return fake


@pytest.fixture
def fleet(
    client: TestClient, tenant: CreatedTenant, publisher: FakePublisher, session_factory: sessionmaker[Session]
) -> Fleet:
    return Fleet(client, tenant.admin_token, session_factory)


def test_targets_follow_the_group_policy(fleet: Fleet, publisher: FakePublisher) -> None:
    os_key = generate_private_key()
    fleet.os(os_key, "1.0.0")
    app = fleet.app("1.0.0")
    os_path = f"os/{OS_COMPONENT}/1.0.0.img"
    app_path = f"apps/{APP_COMPONENT}/1.0.0.img"
    for name in ("Development", "Field Test", "Production"):
        r = fleet.deploy(fleet.groups[name], str(app["id"]))
        assert r.status_code == 201, r.text
    # UpdateAll: OS + apps; No3rdPartyAppUpdates (Development): OS only.
    assert publisher.paths(fleet.groups["Production"]) == [app_path, os_path]
    assert publisher.paths(fleet.groups["Field Test"]) == [app_path, os_path]
    assert publisher.paths(fleet.groups["Development"]) == [os_path]
    spec = next(t for t in publisher.published[fleet.groups["Production"]] if t.path == app_path)
    assert spec.blob_sha256 == app["sha256"]
    assert spec.length == app["size"]
    assert spec.custom == {
        "bastion": {"image_type": "app", "component_id": APP_COMPONENT, "version": "1.0.0", "security_version": 1}
    }
    # NoUpdates: nothing at all.
    fleet.call("PATCH", f"/device-groups/{fleet.groups['Production']}", json={"update_policy": "NoUpdates"})
    assert publisher.paths(fleet.groups["Production"]) == []
    fleet.call("PATCH", f"/device-groups/{fleet.groups['Production']}", json={"update_policy": "UpdateAll"})
    assert publisher.paths(fleet.groups["Production"]) == [app_path, os_path]


def test_the_newest_deployment_is_current(fleet: Fleet, publisher: FakePublisher) -> None:
    v1, v2, other = fleet.app("1.0.0"), fleet.app("2.0.0"), fleet.app("1.0.0", APP2_COMPONENT)
    group = fleet.groups["Field Test"]
    first = fleet.deploy(group, str(v1["id"]), str(other["id"])).json()
    assert first["current"] is True
    second = fleet.deploy("Lamp/Field Test", v2["sha256"]).json()
    assert publisher.paths(group) == [f"apps/{APP_COMPONENT}/2.0.0.img"]
    assert fleet.call("GET", f"/deployments/{first['id']}").json()["current"] is False
    assert fleet.call("GET", f"/deployments/{second['id']}").json()["current"] is True
    listed = fleet.call("GET", "/deployments", params={"group": group}).json()
    assert [d["id"] for d in listed] == [second["id"], first["id"]]


def test_deployment_input_is_checked(fleet: Fleet) -> None:
    v1, v2 = fleet.app("1.0.0"), fleet.app("2.0.0")
    group = fleet.groups["Production"]
    r = fleet.deploy(group, str(v1["id"]), str(v2["id"]))
    assert (r.status_code, r.json()["error"]) == (400, "duplicate_component")
    r = fleet.deploy(group)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_deployment")
    r = fleet.deploy(group, "9999")
    assert r.status_code == 404
    assert "bastion image list" in r.json()["detail"]
    r = fleet.deploy(group, "latest")
    assert (r.status_code, r.json()["error"]) == (400, "invalid_image_ref")
    assert fleet.call("GET", "/deployments/77").status_code == 404


def test_tenants_cannot_deploy_to_or_with_each_others_things(
    fleet: Fleet,
    client: TestClient,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    publisher: FakePublisher,
) -> None:
    a_image = fleet.app("1.0.0")
    a_deployment = fleet.deploy(fleet.groups["Production"], str(a_image["id"])).json()
    b = Fleet(client, make_tenant("bravo").admin_token)
    b_image = b.app("1.0.0", APP2_COMPONENT)
    # B deploys A's image (by id and by hash) to its own group: 404, audited.
    for ref in (str(a_image["id"]), a_image["sha256"]):
        assert b.deploy(b.groups["Production"], ref).status_code == 404
    # B deploys its own image to A's group: 404, audited; A's targets are untouched.
    before = publisher.paths(fleet.groups["Production"])
    assert b.deploy(fleet.groups["Production"], str(b_image["id"])).status_code == 404
    assert publisher.paths(fleet.groups["Production"]) == before
    assert b.call("GET", f"/deployments/{a_deployment['id']}").status_code == 404
    assert b.call("GET", "/deployments").json() == []
    with session_factory() as session:
        denied = session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.outcome == "denied", AuditEvent.tenant_id != a_deployment["tenant_id"]
            )
        ).all()
    assert sorted(denied) == ["deployment.create"] * 3 + ["deployment.read"]


def test_deployment_show_counts_devices_per_state(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    image = fleet.app("1.0.0")
    group = fleet.groups["Field Test"]
    deployment = fleet.deploy(group, str(image["id"])).json()
    devices: list[StatusDevice] = []
    for _ in range(4):
        device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
        assert fleet.call("POST", f"/devices/{device.device_id}/group", json={"group": group}).status_code == 200
        devices.append(device)
    installed, failed, rolled_back, silent = devices
    now = clock()
    reports = [
        installed.report(
            iat=now, installed=[(APP_COMPONENT, "1.0.0")], events=[event(now, "app_installed", APP_COMPONENT, "1.0.0")]
        ),
        failed.report(iat=now, events=[event(now, "update_refused", APP_COMPONENT, "1.0.0", "signature")]),
        rolled_back.report(iat=now, events=[event(now, "os_rolled_back", detail="trial failed")]),
    ]
    for body in reports:
        r = fleet.client.post("/api/v1/device/status", content=body, headers=COSE)
        assert r.status_code == 200, r.text
    shown = fleet.call("GET", f"/deployments/{deployment['id']}").json()
    assert shown["counts"] == {
        "pending": 1,
        "installed": 1,
        "deferred": 0,
        "failed": 1,
        "rolled_back": 1,
        "revoked": 0,
    }
    assert shown["complete"] is False
    states = {d["device_id"]: d["state"] for d in shown["devices"]}
    assert states == {
        installed.device_id: "installed",
        failed.device_id: "failed",
        rolled_back.device_id: "rolled_back",
        silent.device_id: "pending",
    }
    assert [i["sha256"] for i in shown["images"]] == [image["sha256"]]
    assert shown["group_name"] == "Field Test"
    # A newer deployment makes the installed device pending again for it.
    v2 = fleet.app("2.0.0")
    newer = fleet.deploy(group, str(v2["id"])).json()
    assert newer["counts"]["installed"] == 0


def test_a_revoked_or_unclaimed_device_does_not_hold_a_deployment_pending(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    """Issue 9 §7: a revoked device gets no update, so it is counted apart and the deployment completes."""
    image = fleet.app("1.0.0")
    group = fleet.groups["Field Test"]
    deployment = fleet.deploy(group, str(image["id"])).json()
    devices = [
        make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
        for _ in range(3)
    ]
    for device in devices:
        assert fleet.call("POST", f"/devices/{device.device_id}/group", json={"group": group}).status_code == 200
    installed, revoked, unclaimed = devices
    now = clock()
    body = installed.report(
        iat=now, installed=[(APP_COMPONENT, "1.0.0")], events=[event(now, "app_installed", APP_COMPONENT, "1.0.0")]
    )
    assert fleet.client.post("/api/v1/device/status", content=body, headers=COSE).status_code == 200
    shown = fleet.call("GET", f"/deployments/{deployment['id']}").json()
    assert (shown["counts"]["pending"], shown["counts"]["installed"], shown["complete"]) == (2, 1, False)

    assert fleet.call("POST", f"/devices/{revoked.device_id}/revoke").status_code == 200
    assert fleet.call("POST", f"/devices/{unclaimed.device_id}/unclaim").status_code == 200
    shown = fleet.call("GET", f"/deployments/{deployment['id']}").json()
    assert shown["counts"] == {
        "pending": 0,
        "installed": 1,
        "deferred": 0,
        "failed": 0,
        "rolled_back": 0,
        "revoked": 1,
    }
    assert {d["device_id"]: d["state"] for d in shown["devices"]} == {
        installed.device_id: "installed",
        revoked.device_id: "revoked",
    }
    assert shown["complete"] is True
