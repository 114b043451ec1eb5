"""Device capabilities over HTTP: issue (roles, tenants, audit), list, revoke; the attestation with one.

SQLite and PostgreSQL, through the migrations (conftest). The attestation half
runs the real device endpoint with the simulator's EATs: a good appDevelopment
capability puts the device in its product's Development group (which takes no
app updates) and marks it in development mode; every bad one is refused with its
own code and recorded.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from typing import Any

import pytest
from attest_sim import SimDevice
from attest_world import World
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.images.capability import CapabilityClaims, build_capability, decode_capability
from bastion.images.package import key_id
from bastion.service.ca.service import load_signing_ca
from bastion.service.fleet.policy import UpdatePolicy
from bastion.service.models import AuditEvent, DeviceGroup
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer

EAT = {"Content-Type": "application/eat+cwt"}
DEV_KEY = generate_private_key()
DEV_PEM = public_key_pem(DEV_KEY.public_key()).decode()


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


def token(client: TestClient, admin: str, role: str) -> str:
    answer = client.post("/api/v1/tokens", json={"name": f"{role} t", "role": role}, headers=bearer(admin))
    assert answer.status_code == 201, answer.text
    value: str = answer.json()["token"]
    return value


def product(client: TestClient, admin: str, name: str = "widget") -> dict[str, str]:
    """Create a product; return its group ids by name."""
    answer = client.post("/api/v1/products", json={"name": name, "description": ""}, headers=bearer(admin))
    assert answer.status_code == 201, answer.text
    return {g["name"]: g["id"] for g in answer.json()["groups"]}


def assign(client: TestClient, admin: str, device_id: str, group: str | None) -> dict[str, Any]:
    answer = client.post(f"/api/v1/devices/{device_id}/group", json={"group": group}, headers=bearer(admin))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def issue(client: TestClient, auth: str, device_id: str, **body: Any) -> Any:
    body.setdefault("kind", "appDevelopment")
    body.setdefault("developer_keys", [DEV_PEM])
    return client.post(f"/api/v1/devices/{device_id}/capabilities", json=body, headers=bearer(auth))


def audit(world: World, action: str) -> list[AuditEvent]:
    with world.sessions() as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        return list(session.scalars(query))


def test_admins_and_contributors_issue_readers_get_403_other_tenants_404(
    client: TestClient, world: World, make_tenant: Any, clock: FakeClock
) -> None:
    admin = world.tenant.admin_token
    groups = product(client, admin)
    chip = world.device()
    assign(client, admin, chip.device_id, "widget/Field Test")

    issued = issue(client, admin, chip.device_id)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["kind"] == "appDevelopment"
    assert body["device_id"] == chip.device_id
    assert body["tenant_id"] == world.tenant.tenant_id
    assert body["group_id"] == groups["Development"]  # from the product of the device's group
    assert body["developer_key_ids"] == [key_id(DEV_KEY.public_key()).hex()]
    assert dt.datetime.fromisoformat(body["expires_at"]) - dt.datetime.fromisoformat(body["issued_at"]) == (
        dt.timedelta(days=30)
    )
    cap = decode_capability(base64.b64decode(body["capability"]))
    assert (cap.capability_id, cap.device_id, cap.tenant_id) == (body["id"], chip.device_id, world.tenant.tenant_id)

    contributor = token(client, admin, "contributor")
    clock.advance(dt.timedelta(seconds=1))
    assert issue(client, contributor, chip.device_id, kind="fieldServicing", developer_keys=[]).status_code == 201

    reader = token(client, admin, "reader")
    refused = issue(client, reader, chip.device_id)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert [e.outcome for e in audit(world, "auth.insufficient_role")] == ["denied"]

    other = make_tenant("globex")
    hidden = issue(client, other.admin_token, chip.device_id)
    assert hidden.status_code == 404
    assert hidden.json()["error"] == "not_found"
    listed = client.get(f"/api/v1/devices/{chip.device_id}/capabilities", headers=bearer(other.admin_token))
    assert listed.status_code == 404

    rows = audit(world, "capability.issue")
    assert [(e.outcome, e.actor, e.target) for e in rows] == [
        ("ok", rows[0].actor, f"device:{chip.device_id}"),
        ("ok", rows[1].actor, f"device:{chip.device_id}"),
        ("denied", rows[2].actor, f"device:{chip.device_id}"),
    ]
    assert rows[0].actor != rows[1].actor  # admin, then contributor
    assert f"capability={body['id']} kind=appDevelopment" in rows[0].detail
    assert rows[2].tenant_id == other.tenant_id
    assert rows[2].detail == "no such object in this tenant"  # as for a missing device (issue 7, section 6)
    # The reader may list; the newest comes first.
    listed = client.get(f"/api/v1/devices/{chip.device_id}/capabilities", headers=bearer(reader))
    assert listed.status_code == 200
    assert [c["kind"] for c in listed.json()] == ["fieldServicing", "appDevelopment"]
    assert "capability" not in listed.json()[0]  # the file goes only to the issuer


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"kind": "rootAccess"}, "invalid_capability_kind"),
        ({"developer_keys": []}, "invalid_developer_key"),
        ({"developer_keys": ["not a pem"]}, "invalid_developer_key"),
        ({"kind": "fieldServicing"}, "invalid_developer_key"),
        ({"developer_keys": [public_key_pem(generate_private_key().public_key()).decode() for _ in range(9)]}, None),
        ({"valid_days": 366}, "invalid_validity"),
    ],
)
def test_bad_requests_are_refused_with_named_errors(
    client: TestClient, world: World, body: dict[str, Any], code: str | None
) -> None:
    admin = world.tenant.admin_token
    product(client, admin)
    chip = world.device()
    assign(client, admin, chip.device_id, "widget/Field Test")
    answer = issue(client, admin, chip.device_id, **body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == (code or "invalid_developer_key")
    assert audit(world, "capability.issue") == []


def test_development_needs_a_product_and_unknown_devices_are_404(client: TestClient, world: World) -> None:
    admin = world.tenant.admin_token
    chip = world.device()
    answer = issue(client, admin, chip.device_id)
    assert answer.status_code == 400
    assert answer.json()["error"] == "product_required"
    groups = product(client, admin)
    answer = issue(client, admin, chip.device_id, product="widget", valid_days=2)
    assert answer.status_code == 201, answer.text
    assert answer.json()["group_id"] == groups["Development"]
    assert issue(client, admin, "ab" * 32, product="widget").status_code == 404
    assert issue(client, admin, "AB" * 32).status_code == 422
    assert issue(client, admin, chip.device_id, product="nope").status_code == 404


def test_revoke_is_audited_and_idempotent(client: TestClient, world: World) -> None:
    admin = world.tenant.admin_token
    product(client, admin)
    chip = world.device()
    cap_id = issue(client, admin, chip.device_id, product="widget").json()["id"]
    path = f"/api/v1/devices/{chip.device_id}/capabilities/{cap_id}/revoke"
    reader = token(client, admin, "reader")
    assert client.post(path, headers=bearer(reader)).status_code == 403
    first = client.post(path, headers=bearer(admin))
    assert first.status_code == 200
    assert first.json()["revoked_at"] is not None
    assert client.post(path, headers=bearer(admin)).json()["revoked_at"] == first.json()["revoked_at"]
    missing = f"/api/v1/devices/{chip.device_id}/capabilities/{'0' * 8}-0000-4000-8000-000000000000/revoke"
    assert client.post(missing, headers=bearer(admin)).status_code == 404
    assert [e.detail for e in audit(world, "capability.revoke")] == [
        f"capability={cap_id}",
        f"capability={cap_id} already revoked",
    ]


# --- the attestation path ------------------------------------------------------------


def nonce_for(client: TestClient, chip: SimDevice) -> bytes:
    answer = client.post("/api/v1/attestation/challenge", json={"device_id": chip.device_id})
    value: str = answer.json()["nonce"]
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def attest(client: TestClient, chip: SimDevice, capability: bytes | None, clock: FakeClock) -> Any:
    nonce = nonce_for(client, chip)
    claims = dataclasses.replace(chip.claims(nonce, now=clock()), capability=capability)
    return client.post("/api/v1/attestation", content=chip.eat(nonce, claims=claims), headers=EAT)


def device(client: TestClient, admin: str, device_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = client.get(f"/api/v1/devices/{device_id}", headers=bearer(admin)).json()
    return shown


def test_attesting_with_a_capability_enters_development_mode_and_leaving_returns(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    admin = world.tenant.admin_token
    groups = product(client, admin)
    chip = world.device()
    assign(client, admin, chip.device_id, "widget/Field Test")
    capability = base64.b64decode(issue(client, admin, chip.device_id).json()["capability"])

    answer = attest(client, chip, capability, clock)
    assert answer.status_code == 200, answer.text
    assert answer.json()["updates"]["group_id"] == groups["Development"]
    shown = device(client, admin, chip.device_id)
    assert shown["development_mode"] is True
    assert shown["capability_kind"] == "appDevelopment"
    assert shown["group_id"] == groups["Development"]
    assert shown["attestations"][0]["detail"].startswith("development mode: capability")
    # The Development group takes no cloud app updates (Azure Sphere's default policy).
    with world.sessions() as session:
        development = session.get(DeviceGroup, groups["Development"])
        assert development is not None
        assert development.update_policy == UpdatePolicy.NO_3RD_PARTY_APP_UPDATES.value
    # Again in development mode: still in Development, and it remembers Field Test.
    assert attest(client, chip, capability, clock).status_code == 200
    # An operator assignment meanwhile names the group it returns to.
    assert assign(client, admin, chip.device_id, "widget/Production")["group_id"] == groups["Development"]
    # Without the capability it leaves development mode and returns.
    answer = attest(client, chip, None, clock)
    assert answer.status_code == 200
    assert answer.json()["updates"]["group_id"] == groups["Production"]
    shown = device(client, admin, chip.device_id)
    assert (shown["development_mode"], shown["capability_id"], shown["group_id"]) == (
        False,
        None,
        groups["Production"],
    )
    # Field servicing: the device keeps its group.
    serving = issue(client, admin, chip.device_id, kind="fieldServicing", developer_keys=[]).json()
    answer = attest(client, chip, base64.b64decode(serving["capability"]), clock)
    assert answer.status_code == 200
    shown = device(client, admin, chip.device_id)
    assert (shown["development_mode"], shown["capability_kind"], shown["group_id"]) == (
        False,
        "fieldServicing",
        groups["Production"],
    )


def test_bad_capabilities_are_refused_with_their_code_and_recorded(
    client: TestClient,
    world: World,
    *,
    clock: FakeClock,
    make_tenant: Any,
    master_key: bytes,
    session_factory: sessionmaker[Session],
) -> None:
    admin = world.tenant.admin_token
    groups = product(client, admin)
    chip, other_chip = world.device(), world.device()
    assign(client, admin, chip.device_id, "widget/Field Test")
    assign(client, admin, other_chip.device_id, "widget/Field Test")
    good = issue(client, admin, chip.device_id).json()
    good_bytes = base64.b64decode(good["capability"])
    for_other = base64.b64decode(issue(client, admin, other_chip.device_id).json()["capability"])
    with session_factory() as session:
        ca_key, _ = load_signing_ca(session, world.tenant.tenant_id, master_key)
    genuine = decode_capability(good_bytes)
    claims = CapabilityClaims(**{f.name: getattr(genuine, f.name) for f in dataclasses.fields(CapabilityClaims)})
    # The other tenant's CA signs a capability for this device.
    globex = make_tenant("globex")
    with session_factory() as session:
        globex_key, _ = load_signing_ca(session, globex.tenant_id, master_key)
    cases = [
        (b"\x00not a capability", "capability_malformed"),
        (build_capability(dataclasses.replace(claims, tenant_id=globex.tenant_id), globex_key), "capability_untrusted"),
        (build_capability(claims, generate_private_key()), "capability_untrusted"),
        (good_bytes[:-1] + bytes([good_bytes[-1] ^ 1]), "capability_bad_signature"),
        (for_other, "capability_wrong_device"),
        (build_capability(dataclasses.replace(claims, tenant_id="someone-else"), ca_key), "capability_wrong_tenant"),
        (
            build_capability(
                dataclasses.replace(claims, issued_at=claims.issued_at - 7200, expires_at=claims.issued_at - 3600),
                ca_key,
            ),
            "capability_expired",
        ),
        # Signed by the tenant CA, but not the file the service issued under that id.
        (build_capability(dataclasses.replace(claims, expires_at=claims.expires_at + 1), ca_key), "capability_revoked"),
    ]
    for data, code in cases:
        answer = attest(client, chip, data, clock)
        assert answer.status_code == 403, (code, answer.text)
        assert answer.json()["error"] == code
    revoke = f"/api/v1/devices/{chip.device_id}/capabilities/{good['id']}/revoke"
    assert attest(client, chip, good_bytes, clock).status_code == 200
    assert client.post(revoke, headers=bearer(admin)).status_code == 200
    answer = attest(client, chip, good_bytes, clock)
    assert answer.json()["error"] == "capability_revoked"
    shown = device(client, admin, chip.device_id)
    reasons = [a["reason"] for a in reversed(shown["attestations"])]
    assert reasons == [code for _, code in cases] + ["ok", "capability_revoked"]
    assert shown["last_result"] == "failed"
    assert shown["last_reason"] == "capability_revoked"
    assert shown["group_id"] == groups["Development"]  # entered before the revocation; no certificate now
    # A capability that was good expires with time.
    short = base64.b64decode(issue(client, admin, chip.device_id, valid_days=1).json()["capability"])
    assert attest(client, chip, short, clock).status_code == 200
    clock.advance(dt.timedelta(days=1, seconds=1))
    assert attest(client, chip, short, clock).json()["error"] == "capability_expired"
