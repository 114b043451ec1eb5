"""``GET /fleet/health``: crash-free device rates per deployment, OS version and group; readers may read."""

from __future__ import annotations

import datetime as dt

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fastapi import FastAPI
from fleet_world import APP_COMPONENT, FakePublisher, Fleet, make_status_device
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer


def _token(client: TestClient, admin: str, role: str) -> str:
    answer = client.post("/api/v1/tokens", json={"name": f"{role} t", "role": role}, headers=bearer(admin))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


@pytest.fixture
def fleet(app: FastAPI, client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]) -> Fleet:
    app.state.tuf_publisher = FakePublisher()
    return Fleet(client, tenant.admin_token, session_factory)


def test_health_per_deployment_os_and_group(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    group = fleet.groups["Production"]
    image = fleet.app("1.0.0")
    deployment = fleet.deploy(group, str(image["id"])).json()
    now = clock()
    devices = [
        make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
        for _ in range(4)
    ]
    for index, device in enumerate(devices):
        assert fleet.call("POST", f"/devices/{device.device_id}/group", json={"group": group}).status_code == 200
        records = [crash(now, component=APP_COMPONENT)] if index == 0 else []
        body = batch(device, iat=now, installed=[(APP_COMPONENT, "1.0.0")], os_version="2.0.0", records=records)
        assert fleet.client.post(ENDPOINT, content=body, headers=COSE).status_code == 200
    reader = bearer(_token(fleet.client, tenant.admin_token, "reader"))
    by_deployment = fleet.client.get("/api/v1/fleet/health", params={"by": "deployment"}, headers=reader).json()
    assert by_deployment["by"] == "deployment"
    row = by_deployment["items"][0]
    assert row["key"] == str(deployment["id"])
    assert row["releases"] == [f"{APP_COMPONENT}@1.0.0"]
    assert (row["devices"], row["crashed_devices"], row["crash_free_rate"]) == (4, 1, 0.75)
    by_os = fleet.client.get("/api/v1/fleet/health", params={"by": "os", "window": "1h"}, headers=reader).json()
    assert [(r["key"], r["devices"], r["crashed_devices"]) for r in by_os["items"]] == [("2.0.0", 4, 1)]
    by_group = fleet.client.get("/api/v1/fleet/health", params={"by": "group"}, headers=reader).json()
    assert [(r["group_id"], r["label"], r["devices"]) for r in by_group["items"]] == [(group, "Production", 4)]
    # The window moves on: nothing seen in the last hour a day later.
    clock.advance(dt.timedelta(days=1))
    later = fleet.client.get("/api/v1/fleet/health", params={"by": "os", "window": "1h"}, headers=reader).json()
    assert later["items"] == []


def test_bad_views_and_windows_are_refused_with_a_clear_error(client: TestClient, tenant: CreatedTenant) -> None:
    auth = bearer(tenant.admin_token)
    for window in ("0h", "24", "1y", "99d", "h"):
        r = client.get("/api/v1/fleet/health", params={"window": window}, headers=auth)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_window"), window
    assert client.get("/api/v1/fleet/health", params={"by": "planet"}, headers=auth).status_code == 422
    assert client.get("/api/v1/fleet/health").status_code == 401
    schema = client.get("/openapi.json").json()
    assert "/api/v1/fleet/health" in schema["paths"]
    assert "/api/v1/devices/{device_id}/log-requests" in schema["paths"]
    assert "/api/v1/device/logs" in schema["paths"]
