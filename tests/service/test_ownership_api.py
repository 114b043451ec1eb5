"""Claims with proof, unclaim, release and transfer over HTTP, and the attacks of issue 7 section 1.

Each attack fails closed with a clear error and leaves a record (an audit event).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

import cbor2
import pytest
from attest_sim import SimDevice, SimVendor
from attest_world import World
from claim_proof import (
    b64,
    claim_challenge,
    claim_evidence,
    claim_with_evidence,
    claim_with_voucher,
    voucher_for,
)
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto import cose
from bastion.service.models import Device, DeviceOwnershipEvent
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer

EAT = {"Content-Type": "application/eat+cwt"}


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


@pytest.fixture
def rival(make_tenant: Callable[[str], CreatedTenant]) -> CreatedTenant:
    return make_tenant("rival")


def _audit(client: TestClient, admin: str) -> list[dict[str, str]]:
    return list(client.get("/api/v1/audit", headers=bearer(admin)).json())


def _denied(client: TestClient, admin: str) -> list[tuple[str, str, str]]:
    return [(e["action"], e["target"], e["detail"]) for e in _audit(client, admin) if e["outcome"] == "denied"]


def _history(client: TestClient, token: str, device_id: str) -> list[dict[str, str]]:
    response = client.get(f"/api/v1/devices/{device_id}/ownership", headers=bearer(token))
    assert response.status_code == 200, response.text
    return list(response.json())


def _attest(client: TestClient, chip: SimDevice) -> tuple[int, dict[str, str]]:
    nonce = client.post("/api/v1/attestation/challenge", json={"device_id": chip.device_id}).json()["nonce"]
    token = chip.eat(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    response = client.post("/api/v1/attestation", content=token, headers=EAT)
    return response.status_code, response.json()


# --- physical-access claim ---------------------------------------------------------


def test_claim_with_evidence(client: TestClient, world: World, clock: FakeClock) -> None:
    chip = world.device(claimed=False)
    token = world.tenant.admin_token
    response = client.post("/api/v1/devices/claim/challenge", json={"device_id": chip.device_id}, headers=bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert body["tenant_id"] == world.tenant.tenant_id
    assert dt.datetime.fromisoformat(body["expires_at"]) == clock() + dt.timedelta(minutes=5)

    claimed = claim_with_evidence(client, token, claim_evidence(client, token, chip))
    assert claimed.status_code == 201, claimed.text
    device = claimed.json()
    assert (device["device_id"], device["tenant_id"]) == (chip.device_id, world.tenant.tenant_id)
    assert device["claimed_by"] == f"token:{world.tenant.admin_token_id}"
    event = _audit(client, token)[0]
    assert (event["action"], event["outcome"], event["detail"]) == (
        "device.claim",
        "ok",
        "proof: claim challenge evidence",
    )
    [history] = _history(client, token, chip.device_id)
    assert (history["event"], history["method"]) == ("claim", "evidence")
    assert history["vendor_fingerprint"]
    # The claimed device attests and gets its certificate.
    status, answer = _attest(client, chip)
    assert status == 200, answer


def test_bare_device_id_claim_is_gone(client: TestClient, world: World) -> None:
    """Squatting by ID: knowing a device ID proves nothing."""
    chip = world.device(claimed=False)
    response = client.post(
        "/api/v1/devices/claim", json={"device_id": chip.device_id}, headers=bearer(world.tenant.admin_token)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "proof_required"
    assert "bastion device claim --dir DEV" in response.json()["detail"]
    assert world.device_row(chip.device_id) is None


def test_squatting_with_forged_evidence_is_refused(
    client: TestClient, world: World, rival: CreatedTenant, clock: FakeClock
) -> None:
    """A rival without the device cannot make evidence for it: each forgery is refused and audited."""
    chip = world.device(claimed=False)
    nonce = claim_challenge(client, rival.admin_token, chip.device_id)
    forgeries = [
        chip.eat_signed_by_other_key(nonce),
        chip.eat_with_forged_alias(nonce, now=clock()),
        SimDevice.manufacture(SimVendor.create(now=clock()), now=clock()).eat(nonce),  # untrusted vendor
    ]
    for forged in forgeries:
        response = claim_with_evidence(client, rival.admin_token, forged)
        assert response.status_code == 403, response.text
        assert response.json()["error"] in {"claim_evidence_invalid", "claim_challenge_invalid"}
    assert world.device_row(chip.device_id) is None
    assert len(_denied(client, rival.admin_token)) == len(forgeries)
    # The real owner still claims it.
    owner = world.tenant.admin_token
    assert claim_with_evidence(client, owner, claim_evidence(client, owner, chip)).status_code == 201


def test_challenge_replay_across_tenants_is_refused(client: TestClient, world: World, rival: CreatedTenant) -> None:
    """Evidence over tenant A's challenge (e.g. sniffed) does not claim for tenant B."""
    chip = world.device(claimed=False)
    evidence = claim_evidence(client, world.tenant.admin_token, chip)
    stolen = claim_with_evidence(client, rival.admin_token, evidence)
    assert stolen.status_code == 403
    assert stolen.json()["error"] == "claim_challenge_invalid"
    assert "issued to your tenant" in stolen.json()["detail"]
    assert ("device.claim", f"device:{chip.device_id}", "claim_challenge_invalid") in _denied(client, rival.admin_token)
    assert world.device_row(chip.device_id) is None
    assert claim_with_evidence(client, world.tenant.admin_token, evidence).status_code == 201


def test_attestation_nonce_is_not_a_claim_challenge(client: TestClient, world: World) -> None:
    chip = world.device(claimed=False)
    nonce = client.post("/api/v1/attestation/challenge", json={"device_id": chip.device_id}).json()["nonce"]
    evidence = chip.eat(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    response = claim_with_evidence(client, world.tenant.admin_token, evidence)
    assert response.status_code == 403
    assert response.json()["error"] == "claim_challenge_invalid"


def test_challenge_for_another_device_is_refused(client: TestClient, world: World) -> None:
    chip, other = world.device(claimed=False), world.device(claimed=False)
    token = world.tenant.admin_token
    response = claim_with_evidence(client, token, other.eat(claim_challenge(client, token, chip.device_id)))
    assert response.status_code == 403
    assert response.json()["error"] == "claim_challenge_invalid"


def test_expired_challenge_is_refused(client: TestClient, world: World, clock: FakeClock) -> None:
    chip = world.device(claimed=False)
    token = world.tenant.admin_token
    evidence = claim_evidence(client, token, chip)
    clock.advance(dt.timedelta(minutes=5, seconds=1))
    response = claim_with_evidence(client, token, evidence)
    assert response.status_code == 403
    assert response.json()["error"] == "claim_challenge_expired"
    assert ("device.claim", f"device:{chip.device_id}", "claim_challenge_expired") in _denied(client, token)
    assert world.device_row(chip.device_id) is None


def test_challenge_replay_after_unclaim_is_refused(client: TestClient, world: World) -> None:
    chip = world.device(claimed=False)
    token = world.tenant.admin_token
    evidence = claim_evidence(client, token, chip)
    assert claim_with_evidence(client, token, evidence).status_code == 201
    assert client.post(f"/api/v1/devices/{chip.device_id}/unclaim", headers=bearer(token)).status_code == 200
    again = claim_with_evidence(client, token, evidence)
    assert again.status_code == 403
    assert again.json()["error"] == "claim_challenge_replayed"
    assert world.device_row(chip.device_id) is None


def test_malformed_evidence_is_4xx(client: TestClient, world: World) -> None:
    token = world.tenant.admin_token
    not_b64 = client.post("/api/v1/devices/claim", json={"evidence": "!!!"}, headers=bearer(token))
    assert not_b64.status_code == 400
    assert "base64" in not_b64.json()["detail"]
    garbage = claim_with_evidence(client, token, b"\xa1\x01\x02")
    assert garbage.status_code == 403
    assert garbage.json()["error"] == "claim_evidence_invalid"
    too_long = client.post("/api/v1/devices/claim", json={"evidence": "A" * 30_000}, headers=bearer(token))
    assert too_long.status_code == 422


def test_claim_needs_a_contributor(client: TestClient, world: World) -> None:
    made = client.post("/api/v1/tokens", json={"name": "r", "role": "reader"}, headers=bearer(world.tenant.admin_token))
    reader = made.json()["token"]
    chip = world.device(claimed=False)
    for path, body in (("challenge", {"device_id": chip.device_id}), ("voucher", {"voucher": "AA"})):
        response = client.post(f"/api/v1/devices/claim/{path}", json=body, headers=bearer(reader))
        assert response.status_code == 403
        assert "contributor" in response.json()["detail"]


def test_double_claim_is_409_even_with_proof(client: TestClient, world: World, rival: CreatedTenant) -> None:
    """Transfer without release: the rival holds the device and proves it, and still cannot take it."""
    chip = world.device()
    mine = claim_with_evidence(client, world.tenant.admin_token, claim_evidence(client, world.tenant.admin_token, chip))
    assert mine.status_code == 409
    assert "by your tenant" in mine.json()["detail"]
    theirs = claim_with_evidence(client, rival.admin_token, claim_evidence(client, rival.admin_token, chip))
    assert theirs.status_code == 409
    assert theirs.json()["error"] == "already_claimed"
    assert "release" in theirs.json()["detail"]
    assert ("device.claim", f"device:{chip.device_id}", "already_claimed") in _denied(client, rival.admin_token)
    row = world.device_row(chip.device_id)
    assert row is not None
    assert row.tenant_id == world.tenant.tenant_id


# --- vouchers ------------------------------------------------------------------------


def test_voucher_claims_its_devices(client: TestClient, world: World, clock: FakeClock) -> None:
    chips = [world.device(claimed=False) for _ in range(3)]
    voucher = voucher_for(world.vendor, world.tenant.tenant_id, [c.device_id for c in chips], now=clock())
    response = claim_with_voucher(client, world.tenant.admin_token, voucher)
    assert response.status_code == 201, response.text
    body = response.json()
    assert [d["device_id"] for d in body["claimed"]] == [c.device_id for c in chips]
    assert body["refused"] == []
    [history] = _history(client, world.tenant.admin_token, chips[0].device_id)
    assert (history["method"], history["voucher_id"]) == ("voucher", body["voucher_id"])
    status, _ = _attest(client, chips[0])
    assert status == 200


def test_forged_voucher_is_refused(client: TestClient, world: World, clock: FakeClock) -> None:
    chip = world.device(claimed=False)
    token = world.tenant.admin_token
    # Signed by an untrusted key that names the trusted CA in its kid.
    impostor = SimVendor(key=SimVendor.create(now=clock()).key, cert=world.vendor.cert)
    forged = voucher_for(impostor, world.tenant.tenant_id, [chip.device_id], now=clock())
    # A real voucher whose payload was edited to list another device.
    real = cose.decode_sign1(voucher_for(world.vendor, world.tenant.tenant_id, ["0" * 64], now=clock()))
    payload = cbor2.loads(real.payload) | {"devices": [chip.device_id]}
    edited = cbor2.dumps(cbor2.CBORTag(18, [real.protected_bytes, {}, cbor2.dumps(payload), real.signature]))
    # Signed by an untrusted vendor CA.
    stranger = voucher_for(SimVendor.create(now=clock()), world.tenant.tenant_id, [chip.device_id], now=clock())
    for bad in (forged, edited, stranger):
        response = claim_with_voucher(client, token, bad)
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "voucher_untrusted"
        assert "bastion service vendors" in response.json()["detail"]
    assert world.device_row(chip.device_id) is None
    assert len(_denied(client, token)) == 3


def test_voucher_for_another_tenant_is_refused(
    client: TestClient, world: World, rival: CreatedTenant, clock: FakeClock
) -> None:
    chip = world.device(claimed=False)
    voucher = voucher_for(world.vendor, world.tenant.tenant_id, [chip.device_id], now=clock())
    response = claim_with_voucher(client, rival.admin_token, voucher)
    assert response.status_code == 403
    assert response.json()["error"] == "voucher_wrong_tenant"
    assert _denied(client, rival.admin_token)
    assert world.device_row(chip.device_id) is None


def test_expired_voucher_is_refused(client: TestClient, world: World, clock: FakeClock) -> None:
    chip = world.device(claimed=False)
    voucher = voucher_for(world.vendor, world.tenant.tenant_id, [chip.device_id], now=clock(), days=1)
    clock.advance(dt.timedelta(days=1, seconds=1))
    response = claim_with_voucher(client, world.tenant.admin_token, voucher)
    assert response.status_code == 403
    assert response.json()["error"] == "voucher_expired"


def test_voucher_replay_after_unclaim_is_refused(client: TestClient, world: World, clock: FakeClock) -> None:
    chip = world.device(claimed=False)
    token = world.tenant.admin_token
    voucher = voucher_for(world.vendor, world.tenant.tenant_id, [chip.device_id], now=clock())
    assert claim_with_voucher(client, token, voucher).json()["claimed"]
    assert client.post(f"/api/v1/devices/{chip.device_id}/unclaim", headers=bearer(token)).status_code == 200
    again = claim_with_voucher(client, token, voucher)
    assert again.status_code == 201
    assert again.json()["claimed"] == []
    [(device_id, error)] = [(r["device_id"], r["error"]) for r in again.json()["refused"]]
    assert (device_id, error) == (chip.device_id, "voucher_used")
    assert ("device.claim", f"device:{chip.device_id}", f"voucher {again.json()['voucher_id']}: voucher_used") in (
        _denied(client, token)
    )
    assert world.device_row(chip.device_id) is None


def test_voucher_skips_claimed_devices(
    client: TestClient, world: World, rival: CreatedTenant, clock: FakeClock
) -> None:
    owned, free = world.device(), world.device(claimed=False)
    voucher = voucher_for(world.vendor, rival.tenant_id, [owned.device_id, free.device_id], now=clock())
    body = claim_with_voucher(client, rival.admin_token, voucher).json()
    assert [d["device_id"] for d in body["claimed"]] == [free.device_id]
    assert [(r["device_id"], r["error"]) for r in body["refused"]] == [(owned.device_id, "already_claimed")]
    row = world.device_row(owned.device_id)
    assert row is not None
    assert row.tenant_id == world.tenant.tenant_id


@pytest.mark.parametrize("text", ["", "not base64 !", b64(b"\x00" * 10), b64(cbor2.dumps({"v": 1}))])
def test_malformed_voucher_is_400(client: TestClient, world: World, text: str) -> None:
    response = client.post(
        "/api/v1/devices/claim/voucher", json={"voucher": text}, headers=bearer(world.tenant.admin_token)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] in {"invalid_voucher", "invalid_request"}


# --- unclaim, release, transfer --------------------------------------------------------


def test_unclaim_removes_the_device_and_keeps_history(
    client: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    chip = world.device(claimed=False)
    token = world.tenant.admin_token
    assert claim_with_evidence(client, token, claim_evidence(client, token, chip)).status_code == 201
    assert _attest(client, chip)[0] == 200
    response = client.post(f"/api/v1/devices/{chip.device_id}/unclaim", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["event"] == "unclaim"
    assert world.device_row(chip.device_id) is None
    assert client.get(f"/api/v1/devices/{chip.device_id}", headers=bearer(token)).status_code == 404
    # No certificate (and so no update credential) for the old tenant.
    status, answer = _attest(client, chip)
    assert (status, answer["error"]) == (403, "device_unclaimed")
    assert [e["event"] for e in _history(client, token, chip.device_id)] == ["unclaim", "claim"]
    # Newest first: the refused read after the unclaim (recorded like any missing device), then the unclaim.
    actions = [(e["action"], e["outcome"]) for e in _audit(client, token)]
    assert actions[:2] == [("device.read", "denied"), ("device.unclaim", "ok")]
    with session_factory() as session:
        assert session.query(DeviceOwnershipEvent).count() == 2


def test_unclaim_of_anothers_device_is_404(client: TestClient, world: World, rival: CreatedTenant) -> None:
    chip = world.device()
    response = client.post(f"/api/v1/devices/{chip.device_id}/unclaim", headers=bearer(rival.admin_token))
    assert response.status_code == 404
    assert world.device_row(chip.device_id) is not None


def test_transfer_release_then_claim_with_fresh_proof(
    client: TestClient,
    world: World,
    rival: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    clock: FakeClock,
) -> None:
    owner, buyer, third = world.tenant, rival, make_tenant("third")
    chip = world.device(claimed=False)
    assert (
        claim_with_evidence(client, owner.admin_token, claim_evidence(client, owner.admin_token, chip)).status_code
        == 201
    )
    # Without a release the buyer cannot take it.
    early = claim_with_evidence(client, buyer.admin_token, claim_evidence(client, buyer.admin_token, chip))
    assert early.status_code == 409
    released = client.post(
        f"/api/v1/devices/{chip.device_id}/release",
        json={"to_tenant": buyer.tenant_id},
        headers=bearer(owner.admin_token),
    )
    assert released.status_code == 200, released.text
    assert released.json()["to_tenant_id"] == buyer.tenant_id
    assert world.device_row(chip.device_id) is None
    assert _attest(client, chip)[0] == 403  # nobody's device in between
    # Only the named tenant may claim it, and only with proof.
    other = claim_with_evidence(client, third.admin_token, claim_evidence(client, third.admin_token, chip))
    assert other.status_code == 403
    assert other.json()["error"] == "released_to_another_tenant"
    stale = voucher_for(world.vendor, owner.tenant_id, [chip.device_id], now=clock())
    assert claim_with_voucher(client, owner.admin_token, stale).json()["refused"][0]["error"] == (
        "released_to_another_tenant"
    )
    taken = claim_with_evidence(client, buyer.admin_token, claim_evidence(client, buyer.admin_token, chip))
    assert taken.status_code == 201, taken.text
    World(sessions=world.sessions, tenant=buyer, vendor=world.vendor, now=clock()).publish_os(
        chip.os_measurement, chip.os_version
    )
    status, answer = _attest(client, chip)
    assert (status, answer["tenant_id"]) == (200, buyer.tenant_id)
    # Each side sees its part of the history; the seller's token is not shown to the buyer.
    assert [e["event"] for e in _history(client, owner.admin_token, chip.device_id)] == ["release", "claim"]
    buyer_view = _history(client, buyer.admin_token, chip.device_id)
    assert [e["event"] for e in buyer_view] == ["claim", "release"]
    assert buyer_view[1]["actor"] == ""
    assert _history(client, third.admin_token, chip.device_id) == []
    assert "device.release_received" in [e["action"] for e in _audit(client, buyer.admin_token)]
    assert client.get(f"/api/v1/devices/{chip.device_id}", headers=bearer(owner.admin_token)).status_code == 404


def test_release_to_unknown_or_own_tenant_is_refused(client: TestClient, world: World) -> None:
    chip = world.device()
    token = world.tenant.admin_token
    path = f"/api/v1/devices/{chip.device_id}/release"
    unknown = client.post(path, json={"to_tenant": "no-such-tenant"}, headers=bearer(token))
    assert unknown.status_code == 404
    own = client.post(path, json={"to_tenant": world.tenant.tenant_id}, headers=bearer(token))
    assert own.status_code == 400
    assert world.device_row(chip.device_id) is not None


def test_release_of_a_device_you_do_not_own_does_not_reveal_whether_a_tenant_exists(
    client: TestClient, world: World, rival: CreatedTenant
) -> None:
    """Red team: a release of someone else's device must not answer "no tenant X" for a made-up tenant.

    The tenant check ran before the ownership check, so any contributor could tell
    real tenant IDs from made-up ones with a device it does not hold.
    """
    chip = world.device()  # the world tenant's
    path = f"/api/v1/devices/{chip.device_id}/release"
    real = client.post(path, json={"to_tenant": world.tenant.tenant_id}, headers=bearer(rival.admin_token))
    made_up = client.post(
        path, json={"to_tenant": "7b0c4a4e-0000-4000-8000-000000000000"}, headers=bearer(rival.admin_token)
    )
    assert real.status_code == made_up.status_code == 404
    assert real.json() == made_up.json()
    assert world.device_row(chip.device_id) is not None


def test_history_pages(client: TestClient, world: World, session_factory: sessionmaker[Session]) -> None:
    chip = world.device(claimed=False)
    token = world.tenant.admin_token
    for _ in range(3):
        assert claim_with_evidence(client, token, claim_evidence(client, token, chip)).status_code == 201
        assert client.post(f"/api/v1/devices/{chip.device_id}/unclaim", headers=bearer(token)).status_code == 200
    page = client.get(f"/api/v1/devices/{chip.device_id}/ownership?limit=2&offset=1", headers=bearer(token)).json()
    assert [e["event"] for e in page] == ["claim", "unclaim"]
    with session_factory() as session:
        assert session.get(Device, chip.device_id) is None


def test_unclaim_of_a_revoked_device_keeps_the_revocation_in_the_history(client: TestClient, world: World) -> None:
    chip = world.device(revoked=True)
    event = client.post(f"/api/v1/devices/{chip.device_id}/unclaim", headers=bearer(world.tenant.admin_token)).json()
    assert event["detail"].startswith("revoked at ")
    assert _audit(client, world.tenant.admin_token)[0]["detail"].startswith("revoked at ")
