"""The device endpoints over HTTP (TestClient, full app, SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from attest_sim import SimDevice, SimVendor
from attest_world import World, openssl_verify
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.app import create_app
from bastion.service.config import Settings
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer

EAT = {"Content-Type": "application/eat+cwt"}


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


def challenge(client: TestClient, device: SimDevice) -> bytes:
    response = client.post("/api/v1/attestation/challenge", json={"device_id": device.device_id})
    assert response.status_code == 200, response.text
    nonce: str = response.json()["nonce"]
    return base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))


def test_full_attestation_over_http(client: TestClient, world: World, clock: FakeClock, tmp_path: Path) -> None:
    chip = world.device()
    answer = client.post("/api/v1/attestation/challenge", json={"device_id": chip.device_id})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"nonce", "expires_at"}
    assert "=" not in body["nonce"]
    assert dt.datetime.fromisoformat(body["expires_at"]) == clock() + dt.timedelta(seconds=60)
    nonce = base64.urlsafe_b64decode(body["nonce"] + "=")
    assert len(nonce) == 32

    response = client.post("/api/v1/attestation", content=chip.eat(nonce), headers=EAT)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"device_id", "tenant_id", "certificate", "ca_chain", "not_after", "updates"}
    assert result["device_id"] == chip.device_id
    assert result["tenant_id"] == world.tenant.tenant_id
    assert result["updates"] == []
    assert dt.datetime.fromisoformat(result["not_after"]) == clock() + dt.timedelta(hours=24)
    ca = client.get("/api/v1/ca", headers=bearer(world.tenant.admin_token))
    assert result["ca_chain"] == [ca.text]
    verified = openssl_verify(tmp_path, ca.text, result["certificate"], at=clock())
    assert verified.returncode == 0, verified.stdout + verified.stderr

    shown = client.get(f"/api/v1/devices/{chip.device_id}", headers=bearer(world.tenant.admin_token)).json()
    assert shown["last_result"] == "ok"
    assert shown["os_version"] == "1.0.0"
    assert shown["attestations"][0]["reason"] == "ok"

    # The same evidence again is a replay.
    replay = client.post("/api/v1/attestation", content=chip.eat(nonce), headers=EAT)
    assert replay.status_code == 403
    assert replay.json()["error"] == "nonce_replayed"


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unclaimed", "device_unclaimed"),
        ("revoked", "device_revoked"),
        ("bad_signature", "bad_signature"),
        ("forged_alias", "untrusted_chain"),
        ("untrusted_vendor", "untrusted_chain"),
        ("unknown_os", "unknown_os"),
        ("lying_measurements", "measurement_mismatch"),
    ],
)
def test_refused_attestation_is_403_with_code_and_recorded(
    client: TestClient, world: World, case: str, code: str
) -> None:
    if case == "untrusted_vendor":
        chip = SimDevice.manufacture(SimVendor.create(now=world.now, name="Rogue"), now=world.now)
    elif case == "unknown_os":
        chip = world.device(os_digest=hashlib.sha256(b"unpublished").digest())
    else:
        chip = world.device(claimed=case != "unclaimed", revoked=case == "revoked")
    nonce = challenge(client, chip)
    token = {
        "bad_signature": lambda: chip.eat_signed_by_other_key(nonce),
        "forged_alias": lambda: chip.eat_with_forged_alias(nonce, now=world.now),
        "lying_measurements": lambda: chip.eat_with_lying_measurements(nonce, hashlib.sha256(b"x").digest()),
    }.get(case, lambda: chip.eat(nonce))()
    response = client.post("/api/v1/attestation", content=token, headers=EAT)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == code
    assert body["detail"]
    assert "certificate" not in body
    [record] = world.records(chip.device_id)
    assert (record.result, record.reason) == ("failed", code)


def test_expired_nonce_over_http(client: TestClient, world: World, clock: FakeClock) -> None:
    chip = world.device()
    nonce = challenge(client, chip)
    clock.advance(dt.timedelta(seconds=61))
    response = client.post("/api/v1/attestation", content=chip.eat(nonce), headers=EAT)
    assert (response.status_code, response.json()["error"]) == (403, "nonce_expired")


def test_garbage_is_400_and_recorded(client: TestClient, world: World) -> None:
    response = client.post("/api/v1/attestation", content=b"\x00garbage", headers=EAT)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_evidence"
    [record] = world.records("")
    assert record.reason == "malformed_evidence"


def test_oversized_evidence_is_413_and_recorded(client: TestClient, world: World) -> None:
    response = client.post("/api/v1/attestation", content=b"\xa0" * (16 * 1024 + 1), headers=EAT)
    assert response.status_code == 413
    assert response.json()["error"] == "evidence_too_large"
    [record] = world.records("")
    assert record.reason == "evidence_too_large"


def test_oversized_chunked_evidence_is_413(client: TestClient, world: World) -> None:
    def chunks() -> object:
        for _ in range(20):
            yield b"\xa0" * 1024

    response = client.post("/api/v1/attestation", content=chunks(), headers=EAT)  # type: ignore[arg-type]
    assert response.status_code == 413


def test_evidence_needs_its_media_type(client: TestClient, world: World) -> None:
    chip = world.device()
    response = client.post(
        "/api/v1/attestation",
        content=chip.eat(challenge(client, chip)),
        headers={"Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_request"),
        (b"[]", 400, "invalid_request"),
        (b'{"device_id": 5}', 400, "invalid_request"),
        (b'{"device_id": "abc"}', 422, "invalid_device_id"),
        (b'{"device_id": "' + b"A" * 64 + b'"}', 422, "invalid_device_id"),
        (b'{"device_id": "' + b"a" * 2000 + b'"}', 413, "payload_too_large"),
    ],
)
def test_challenge_rejects_bad_requests(client: TestClient, body: bytes, status: int, code: str) -> None:
    response = client.post("/api/v1/attestation/challenge", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


def test_oversized_chunked_challenge_is_413(client: TestClient) -> None:
    def chunks() -> object:
        for _ in range(3):
            yield b" " * 512

    response = client.post(
        "/api/v1/attestation/challenge",
        content=chunks(),  # type: ignore[arg-type]
        headers={"Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")


@pytest.mark.parametrize("path", ["/api/v1/attestation", "/api/v1/attestation/challenge"])
def test_device_endpoints_answer_only_post(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"


def test_device_endpoints_are_in_the_openapi_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    challenge_op = schema["paths"]["/api/v1/attestation/challenge"]["post"]
    attestation_op = schema["paths"]["/api/v1/attestation"]["post"]
    assert "application/json" in challenge_op["requestBody"]["content"]
    assert "application/eat+cwt" in attestation_op["requestBody"]["content"]
    assert {"200", "403", "413", "415"} <= set(attestation_op["responses"])
    # The operator API is still documented alongside.
    assert "/api/v1/devices/claim" in schema["paths"]


def test_nonce_issued_for_another_device_over_http(client: TestClient, world: World) -> None:
    chip, other = world.device(), world.device()
    response = client.post("/api/v1/attestation", content=chip.eat(challenge(client, other)), headers=EAT)
    assert (response.status_code, response.json()["error"]) == (403, "unknown_nonce")
    [record] = world.records(chip.device_id)
    assert record.reason == "unknown_nonce"


def test_challenge_accepts_any_worker(world: World, settings: Settings, clock: FakeClock) -> None:
    """Two app instances sharing the master key (two workers) accept each other's nonces."""
    chip = world.device()
    with (
        TestClient(create_app(settings, clock=clock, migrate_on_startup=False)) as first,
        TestClient(create_app(settings, clock=clock, migrate_on_startup=False)) as second,
    ):
        token = chip.eat(challenge(first, chip))
        assert second.post("/api/v1/attestation", content=token, headers=EAT).status_code == 200
        replay = first.post("/api/v1/attestation", content=token, headers=EAT)
        assert (replay.status_code, replay.json()["error"]) == (403, "nonce_replayed")


@pytest.mark.parametrize("case", ["replayed", "expired", "foreign"])
def test_replayed_genuine_evidence_does_not_mark_the_device_failed(
    client: TestClient, world: World, clock: FakeClock, case: str
) -> None:
    """Red team: old genuine evidence (a sniffed EAT, or the claim EAT a previous owner kept) is not the device now.

    Its chain and signature verify, but its nonce is not a live challenge: sending it
    must not turn the device's ``last_result`` to failed, which cut the device off
    from download credentials (``attestation_failed``) until its next attestation.
    """
    chip = world.device()
    nonce = challenge(client, chip)
    token = chip.eat(nonce)
    assert client.post("/api/v1/attestation", content=token, headers=EAT).status_code == 200
    if case == "expired":
        stale = challenge(client, chip)
        token = chip.eat(stale)
        clock.advance(dt.timedelta(minutes=5))
    elif case == "foreign":
        token = chip.eat(b"\x01" * 32)  # e.g. a claim challenge's nonce: not an attestation nonce
    replay = client.post("/api/v1/attestation", content=token, headers=EAT)
    assert replay.status_code == 403
    assert replay.json()["error"] == {"replayed": "nonce_replayed", "expired": "nonce_expired"}.get(
        case, "unknown_nonce"
    )
    shown = client.get(f"/api/v1/devices/{chip.device_id}", headers=bearer(world.tenant.admin_token)).json()
    assert shown["last_result"] == "ok"
    assert shown["attestations"][0]["reason"] == replay.json()["error"]  # still recorded
