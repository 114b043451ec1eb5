"""Products, their default device groups, group updates and device assignment, with tenant isolation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from claim_proof import add_device_row
from fastapi import FastAPI
from fleet_world import FakePublisher, new_device_id
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.models import AuditEvent, Device
from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient, bearer

DEFAULTS = {
    "Development": ("No3rdPartyAppUpdates", "retail"),
    "Field Test": ("UpdateAll", "retail"),
    "Production": ("UpdateAll", "retail"),
    "Field Test OS Evaluation": ("UpdateAll", "retail-eval"),
    "Production OS Evaluation": ("UpdateAll", "retail-eval"),
}


@pytest.fixture
def publisher(app: FastAPI) -> FakePublisher:
    fake = FakePublisher()
    app.state.tuf_publisher = fake
    return fake


@pytest.fixture
def api(client: TestClient, tenant: CreatedTenant, publisher: FakePublisher) -> Callable[..., Any]:
    def call(method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        return client.request(method, "/api/v1" + path, headers=bearer(token or tenant.admin_token), **kw)

    return call


def _denied(sessions: sessionmaker[Session], tenant_id: str, action: str) -> list[AuditEvent]:
    with sessions() as session:
        query = select(AuditEvent).where(
            AuditEvent.tenant_id == tenant_id, AuditEvent.action == action, AuditEvent.outcome == "denied"
        )
        return list(session.scalars(query))


def test_product_create_makes_the_five_default_groups_and_their_repositories(
    api: Callable[..., Any], publisher: FakePublisher
) -> None:
    r = api("POST", "/products", json={"name": "Thermostat", "description": "v2 board"})
    assert r.status_code == 201, r.text
    product = r.json()
    groups = {g["name"]: (g["update_policy"], g["os_feed"]) for g in product["groups"]}
    assert groups == DEFAULTS
    assert all(g["maintenance_window"] is None for g in product["groups"])
    # Every group has a repository from the start (no OS yet: empty target sets).
    assert set(publisher.published) == {g["id"] for g in product["groups"]}
    assert all(t == [] for t in publisher.published.values())
    shown = api("GET", "/products/Thermostat").json()
    assert shown["id"] == product["id"]
    assert {g["name"] for g in shown["groups"]} == set(DEFAULTS)
    assert [p["name"] for p in api("GET", "/products").json()] == ["Thermostat"]
    by_product = api("GET", "/device-groups", params={"product": product["id"]}).json()
    assert len(by_product) == 5


def test_product_names_are_unique_per_tenant_and_validated(
    api: Callable[..., Any], make_tenant: Callable[[str], CreatedTenant], client: TestClient
) -> None:
    assert api("POST", "/products", json={"name": "Lamp"}).status_code == 201
    again = api("POST", "/products", json={"name": "Lamp"})
    assert again.status_code == 409
    assert again.json()["error"] == "product_exists"
    other = make_tenant("other")
    assert client.post("/api/v1/products", json={"name": "Lamp"}, headers=bearer(other.admin_token)).status_code == 201
    for bad in ("", "   ", "a/b", "x" * 101):
        r = api("POST", "/products", json={"name": bad})
        assert r.status_code == 400, bad
        assert r.json()["error"] == "invalid_name"


def test_group_create_validates_policy_feed_and_window(api: Callable[..., Any], publisher: FakePublisher) -> None:
    api("POST", "/products", json={"name": "Lamp"})
    base: dict[str, Any] = {"product": "Lamp", "name": "Night shift"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"update_policy": "Sometimes"}, "invalid_policy"),
        ({"os_feed": "beta"}, "invalid_feed"),
        ({"maintenance_window": {"start": "25:00", "duration_minutes": 60}}, "invalid_window"),
        ({"maintenance_window": {"start": "2:00", "duration_minutes": 60}}, "invalid_window"),
        ({"maintenance_window": {"start": "02:00", "duration_minutes": 0}}, "invalid_window"),
        ({"maintenance_window": {"start": "02:00", "duration_minutes": 1441}}, "invalid_window"),
    ]
    for extra, code in cases:
        r = api("POST", "/device-groups", json=base | extra)
        assert (r.status_code, r.json()["error"]) == (400, code), extra
    r = api(
        "POST",
        "/device-groups",
        json=base
        | {
            "update_policy": "NoUpdates",
            "os_feed": "retail-eval",
            "maintenance_window": {"start": "02:30", "duration_minutes": 90},
        },
    )
    assert r.status_code == 201, r.text
    group = r.json()
    assert (group["update_policy"], group["os_feed"]) == ("NoUpdates", "retail-eval")
    assert group["maintenance_window"] == {"start": "02:30", "duration_minutes": 90}
    assert publisher.published[group["id"]] == []
    dup = api("POST", "/device-groups", json=base)
    assert (dup.status_code, dup.json()["error"]) == (409, "group_exists")
    # "PRODUCT/GROUP" names a group as well as its id.
    assert api("GET", "/device-groups/Lamp/Night shift").json()["id"] == group["id"]


def test_group_update_changes_policy_feed_and_window(api: Callable[..., Any], publisher: FakePublisher) -> None:
    groups = api("POST", "/products", json={"name": "Lamp"}).json()["groups"]
    field_test = next(g for g in groups if g["name"] == "Field Test")
    calls = publisher.calls
    r = api(
        "PATCH", f"/device-groups/{field_test['id']}", json={"update_policy": "NoUpdates", "os_feed": "retail-eval"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["update_policy"], r.json()["os_feed"]) == ("NoUpdates", "retail-eval")
    assert publisher.calls == calls + 1  # targets changed: republished
    r = api(
        "PATCH",
        "/device-groups/Lamp/Field Test",
        json={"maintenance_window": {"start": "23:00", "duration_minutes": 120}},
    )
    assert r.json()["maintenance_window"] == {"start": "23:00", "duration_minutes": 120}
    # A window travels signed in the group's targets metadata: republished, so running devices see it.
    assert publisher.calls == calls + 2
    window = {"start": "23:00", "duration_minutes": 120}
    assert publisher.customs[field_test["id"]] == {
        "bastion": {"maintenance_window": window, "update_policy": "NoUpdates"}
    }
    r = api("PATCH", "/device-groups/Lamp/Field Test", json={"maintenance_window": None})
    assert r.json()["maintenance_window"] is None
    assert publisher.calls == calls + 3
    assert publisher.customs[field_test["id"]]["bastion"]["maintenance_window"] is None
    api("PATCH", "/device-groups/Lamp/Field Test", json={"maintenance_window": None})
    assert publisher.calls == calls + 3  # no change, no republish
    r = api("PATCH", "/device-groups/Lamp/Field Test", json={"update_policy": "Always"})
    assert r.json()["error"] == "invalid_policy"
    assert api("GET", f"/device-groups/{field_test['id']}").json()["update_policy"] == "NoUpdates"


def test_readers_cannot_change_the_fleet(api: Callable[..., Any], client: TestClient, tenant: CreatedTenant) -> None:
    reader = api("POST", "/tokens", json={"name": "r", "role": "reader"}).json()["token"]
    assert api("POST", "/products", json={"name": "Lamp"}, token=reader).status_code == 403
    assert api("GET", "/products", token=reader).status_code == 200


def test_assign_device_and_tenant_isolation(
    api: Callable[..., Any],
    client: TestClient,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    tenant: CreatedTenant,
) -> None:
    device = new_device_id()
    add_device_row(session_factory, tenant.tenant_id, device)
    groups = api("POST", "/products", json={"name": "Lamp"}).json()["groups"]
    production = next(g for g in groups if g["name"] == "Production")
    r = api("POST", f"/devices/{device}/group", json={"group": "Lamp/Production"})
    assert r.status_code == 200, r.text
    assert r.json()["group_id"] == production["id"]
    assert api("GET", f"/devices/{device}").json()["group_id"] == production["id"]

    b = make_tenant("bravo")

    def as_b(method: str, path: str, **kw: Any) -> Any:
        return client.request(method, "/api/v1" + path, headers=bearer(b.admin_token), **kw)

    b_device = new_device_id()
    add_device_row(session_factory, b.tenant_id, b_device)
    b_groups = as_b("POST", "/products", json={"name": "Bravo lamp"}).json()["groups"]
    # B cannot see A's product or group, nor put A's device in its group, nor its device in A's group.
    assert as_b("GET", f"/products/{production['product_id']}").status_code == 404
    assert as_b("GET", f"/device-groups/{production['id']}").status_code == 404
    assert as_b("GET", "/device-groups/Lamp/Production").status_code == 404
    r = as_b("POST", f"/devices/{device}/group", json={"group": b_groups[0]["id"]})
    assert r.status_code == 404
    r = as_b("POST", f"/devices/{b_device}/group", json={"group": production["id"]})
    assert r.status_code == 404
    assert "bastion device-group list" in r.json()["detail"]
    r = as_b("PATCH", f"/device-groups/{production['id']}", json={"update_policy": "NoUpdates"})
    assert r.status_code == 404
    assert len(_denied(session_factory, b.tenant_id, "device.assign")) == 2
    assert _denied(session_factory, b.tenant_id, "device_group.read")
    assert _denied(session_factory, b.tenant_id, "device_group.update")
    assert _denied(session_factory, b.tenant_id, "product.read")
    with session_factory() as session:
        a_row, b_row = session.get(Device, device), session.get(Device, b_device)
        assert a_row is not None
        assert b_row is not None
        assert a_row.group_id == production["id"]  # unchanged
        assert b_row.group_id is None
    # Unassign.
    r = api("POST", f"/devices/{device}/group", json={"group": None})
    assert r.json()["group_id"] is None
