"""Device claim, list, show and revoke over HTTP, and tenant isolation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.models import Attestation
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

DEVICE = "0123456789abcdef" * 4
OTHER = "f" * 64


def _claim(client: TestClient, token: str, device_id: str = DEVICE) -> dict[str, object]:
    r = client.post("/api/v1/devices/claim", json={"device_id": device_id}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _audit(client: TestClient, admin: str) -> list[dict[str, str]]:
    return list(client.get("/api/v1/audit", headers=bearer(admin)).json())


def test_claim_records_who_and_when(client: TestClient, tenant: CreatedTenant, clock: FakeClock) -> None:
    device = _claim(client, tenant.admin_token)
    assert device["device_id"] == DEVICE
    assert device["tenant_id"] == tenant.tenant_id
    assert device["claimed_by"] == f"token:{tenant.admin_token_id}"
    assert dt.datetime.fromisoformat(str(device["claimed_at"])) == clock()
    assert device["revoked_at"] is None
    assert device["last_result"] is None
    event = _audit(client, tenant.admin_token)[0]
    assert (event["action"], event["target"], event["outcome"]) == ("device.claim", f"device:{DEVICE}", "ok")


def test_double_claim_is_409_for_anyone(client: TestClient, make_tenant: Callable[[str], CreatedTenant]) -> None:
    a, b = make_tenant("a-corp"), make_tenant("b-corp")
    _claim(client, a.admin_token)
    again = client.post("/api/v1/devices/claim", json={"device_id": DEVICE}, headers=bearer(a.admin_token))
    assert again.status_code == 409
    assert again.json()["error"] == "already_claimed"
    theirs = client.post("/api/v1/devices/claim", json={"device_id": DEVICE}, headers=bearer(b.admin_token))
    assert theirs.status_code == 409
    assert "claimed only once" in theirs.json()["detail"]
    # The device stays A's.
    assert client.get(f"/api/v1/devices/{DEVICE}", headers=bearer(a.admin_token)).status_code == 200
    denied = [e for e in _audit(client, b.admin_token) if e["outcome"] == "denied"]
    assert denied[0]["action"] == "device.claim"


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, DEVICE.upper(), " " + DEVICE[1:]],
)
def test_bad_device_id_is_422_with_clear_detail(client: TestClient, tenant: CreatedTenant, bad: str) -> None:
    r = client.post("/api/v1/devices/claim", json={"device_id": bad}, headers=bearer(tenant.admin_token))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_device_id"
    assert "64 lowercase hex characters" in r.json()["detail"]


def test_device_id_path_is_validated(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.get("/api/v1/devices/NOTHEX", headers=bearer(tenant.admin_token))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_device_id"


def test_list_and_show(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    _claim(client, tenant.admin_token, DEVICE)
    clock.advance(dt.timedelta(seconds=1))
    _claim(client, tenant.admin_token, OTHER)
    listed = client.get("/api/v1/devices", headers=bearer(tenant.admin_token)).json()
    assert [d["device_id"] for d in listed] == [DEVICE, OTHER]
    assert client.get("/api/v1/devices?limit=1", headers=bearer(tenant.admin_token)).json()[0]["device_id"] == DEVICE

    with session_factory() as session:
        for i in range(25):
            session.add(
                Attestation(
                    at=clock() + dt.timedelta(minutes=i),
                    device_id=DEVICE,
                    tenant_id=tenant.tenant_id,
                    result="ok" if i % 2 else "failed",
                    reason="ok" if i % 2 else "unknown_os",
                    detail="",
                    os_version=f"1.0.{i}",
                )
            )
        session.add(Attestation(at=clock(), device_id=OTHER, tenant_id=tenant.tenant_id, result="ok", reason="ok"))
        session.commit()
    shown = client.get(f"/api/v1/devices/{DEVICE}", headers=bearer(tenant.admin_token)).json()
    assert shown["device_id"] == DEVICE
    assert len(shown["attestations"]) == 20
    assert shown["attestations"][0]["os_version"] == "1.0.24"  # newest first
    assert {a["reason"] for a in shown["attestations"]} == {"ok", "unknown_os"}


def test_unknown_device_is_404(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.get(f"/api/v1/devices/{DEVICE}", headers=bearer(tenant.admin_token))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_revoke(client: TestClient, tenant: CreatedTenant, clock: FakeClock) -> None:
    _claim(client, tenant.admin_token)
    r = client.post(f"/api/v1/devices/{DEVICE}/revoke", headers=bearer(tenant.admin_token))
    assert r.status_code == 200, r.text
    assert dt.datetime.fromisoformat(r.json()["revoked_at"]) == clock()
    shown = client.get(f"/api/v1/devices/{DEVICE}", headers=bearer(tenant.admin_token)).json()
    assert shown["revoked_at"] is not None
    assert _audit(client, tenant.admin_token)[0]["action"] == "device.revoke"


def test_tenant_b_cannot_read_or_change_tenant_a_device(
    client: TestClient, make_tenant: Callable[[str], CreatedTenant]
) -> None:
    a, b = make_tenant("a-corp"), make_tenant("b-corp")
    _claim(client, a.admin_token)
    missing = client.get(f"/api/v1/devices/{OTHER}", headers=bearer(b.admin_token))

    read = client.get(f"/api/v1/devices/{DEVICE}", headers=bearer(b.admin_token))
    revoke = client.post(f"/api/v1/devices/{DEVICE}/revoke", headers=bearer(b.admin_token))
    listed = client.get("/api/v1/devices", headers=bearer(b.admin_token)).json()

    # Indistinguishable from a device that does not exist.
    assert read.status_code == revoke.status_code == missing.status_code == 404
    assert read.json() == revoke.json() | {"detail": read.json()["detail"]}
    assert read.json()["detail"].replace(DEVICE, "X") == missing.json()["detail"].replace(OTHER, "X")
    assert listed == []
    # A's device was not changed.
    shown = client.get(f"/api/v1/devices/{DEVICE}", headers=bearer(a.admin_token)).json()
    assert shown["revoked_at"] is None
    # Every attempt is audited as denied, in B's log, with the same event for the missing device
    # and A's device: B's audit view does not reveal that A's device exists (issue 7, section 6).
    denied = [(e["action"], e["outcome"], e["target"], e["detail"]) for e in _audit(client, b.admin_token)]
    assert ("device.read", "denied", f"device:{OTHER}", "no such object in this tenant") in denied
    assert ("device.read", "denied", f"device:{DEVICE}", "no such object in this tenant") in denied
    assert ("device.revoke", "denied", f"device:{DEVICE}", "no such object in this tenant") in denied
    assert not any("another tenant" in detail for *_, detail in denied)
