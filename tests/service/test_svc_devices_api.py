"""Device claim, list, show and revoke over HTTP, and tenant isolation.

Claims with proof and their attacks are in test_ownership_api.py; here devices
are claimed through the real claim endpoint once (with evidence), and otherwise
their rows are written directly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from attest_world import World
from claim_proof import claim_evidence, claim_with_evidence
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.models import Attestation, Device
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

DEVICE = "0123456789abcdef" * 4
OTHER = "f" * 64


@pytest.fixture
def claim(session_factory: sessionmaker[Session], clock: FakeClock) -> Callable[..., None]:
    """Write a claimed device's row directly (the claim flow is tested in test_ownership_api.py)."""

    def _claim(tenant: CreatedTenant, device_id: str = DEVICE) -> None:
        with session_factory() as session:
            session.add(
                Device(
                    device_id=device_id,
                    tenant_id=tenant.tenant_id,
                    claimed_at=clock(),
                    claimed_by=f"token:{tenant.admin_token_id}",
                )
            )
            session.commit()

    return _claim


def _audit(client: TestClient, admin: str) -> list[dict[str, str]]:
    return list(client.get("/api/v1/audit", headers=bearer(admin)).json())


def test_claim_records_who_and_when(
    client: TestClient, session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock
) -> None:
    world = World.build(session_factory, tenant, clock())
    chip = world.device(claimed=False)
    r = claim_with_evidence(client, tenant.admin_token, claim_evidence(client, tenant.admin_token, chip))
    assert r.status_code == 201, r.text
    device = r.json()
    assert device["device_id"] == chip.device_id
    assert device["tenant_id"] == tenant.tenant_id
    assert device["claimed_by"] == f"token:{tenant.admin_token_id}"
    assert dt.datetime.fromisoformat(str(device["claimed_at"])) == clock()
    assert device["revoked_at"] is None
    assert device["last_result"] is None
    event = _audit(client, tenant.admin_token)[0]
    assert (event["action"], event["target"], event["outcome"]) == ("device.claim", f"device:{chip.device_id}", "ok")


def test_double_claim_is_409_for_anyone(
    client: TestClient,
    session_factory: sessionmaker[Session],
    make_tenant: Callable[[str], CreatedTenant],
    clock: FakeClock,
) -> None:
    a, b = make_tenant("a-corp"), make_tenant("b-corp")
    world = World.build(session_factory, a, clock())
    chip = world.device()
    again = claim_with_evidence(client, a.admin_token, claim_evidence(client, a.admin_token, chip))
    assert again.status_code == 409
    assert again.json()["error"] == "already_claimed"
    theirs = claim_with_evidence(client, b.admin_token, claim_evidence(client, b.admin_token, chip))
    assert theirs.status_code == 409
    assert "release it to you first" in theirs.json()["detail"]
    # The device stays A's.
    assert client.get(f"/api/v1/devices/{chip.device_id}", headers=bearer(a.admin_token)).status_code == 200
    denied = [e for e in _audit(client, b.admin_token) if e["outcome"] == "denied"]
    assert denied[0]["action"] == "device.claim"


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, DEVICE.upper(), " " + DEVICE[1:]],
)
def test_bad_device_id_is_422_with_clear_detail(client: TestClient, tenant: CreatedTenant, bad: str) -> None:
    r = client.post("/api/v1/devices/claim/challenge", json={"device_id": bad}, headers=bearer(tenant.admin_token))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_device_id"
    assert "64 lowercase hex characters" in r.json()["detail"]


def test_device_id_path_is_validated(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.get("/api/v1/devices/NOTHEX", headers=bearer(tenant.admin_token))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_device_id"


def test_list_and_show(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    claim: Callable[..., None],
) -> None:
    claim(tenant, DEVICE)
    clock.advance(dt.timedelta(seconds=1))
    claim(tenant, OTHER)
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


def test_revoke(client: TestClient, tenant: CreatedTenant, clock: FakeClock, claim: Callable[..., None]) -> None:
    claim(tenant)
    r = client.post(f"/api/v1/devices/{DEVICE}/revoke", headers=bearer(tenant.admin_token))
    assert r.status_code == 200, r.text
    assert dt.datetime.fromisoformat(r.json()["revoked_at"]) == clock()
    shown = client.get(f"/api/v1/devices/{DEVICE}", headers=bearer(tenant.admin_token)).json()
    assert shown["revoked_at"] is not None
    assert _audit(client, tenant.admin_token)[0]["action"] == "device.revoke"


def test_tenant_b_cannot_read_or_change_tenant_a_device(
    client: TestClient, make_tenant: Callable[[str], CreatedTenant], claim: Callable[..., None]
) -> None:
    a, b = make_tenant("a-corp"), make_tenant("b-corp")
    claim(a)
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
