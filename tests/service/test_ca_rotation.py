"""Tenant CA rotation across its whole life, checked with ``openssl verify`` (SQLite and PostgreSQL).

Before: one CA signs. Rotation: a successor signs new certificates; the bundle
holds both CAs and each keeps a CRL, so certificates of either verify and a
revocation reaches both. After the overlap: the old CA is retired (out of the
bundle, no CRL), and its certificates no longer verify against the bundle.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from attest_world import World
from cryptography import x509
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_ca_crl import attest, crl_bundle, openssl_verify, serial_of
from test_capabilities_api import assign, issue, product
from test_capabilities_api import attest as attest_with

from bastion.service.models import AuditEvent, DeviceCertificate
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


def issuer_of(pem: object) -> x509.Name:
    assert isinstance(pem, str)
    return x509.load_pem_x509_certificate(pem.encode()).issuer


def bundle_certs(client: TestClient, token: str) -> tuple[str, list[x509.Certificate]]:
    text = client.get("/api/v1/ca", headers=bearer(token)).text
    return text, x509.load_pem_x509_certificates(text.encode())


def test_rotation_overlap_then_retirement(client: TestClient, world: World, clock: FakeClock, tmp_path: Path) -> None:
    token = world.tenant.admin_token
    chip, other = world.device(), world.device()
    old_cert = attest(client, chip)["certificate"]
    old_other = attest(client, other)["certificate"]
    _, [old_ca] = bundle_certs(client, token)

    clock.advance(dt.timedelta(hours=1))
    rotated = client.post("/api/v1/ca/rotate", json={"overlap_hours": 48}, headers=bearer(token))
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["successor"]["state"] == "signing"
    assert body["retiring"]["state"] == "retiring"
    assert dt.datetime.fromisoformat(body["retiring"]["retire_at"]) == clock() + dt.timedelta(hours=48)
    with world.sessions() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "ca.rotate")).all()
        assert event.target == f"ca:{body['successor']['id']}"

    # Overlap: the bundle holds both CAs, signing CA first; new certificates come from the successor.
    bundle, [new_ca, still_old] = bundle_certs(client, token)
    assert still_old.subject == old_ca.subject
    assert new_ca.public_key() != old_ca.public_key()
    assert new_ca.subject != old_ca.subject  # each generation has its own name ("... 2")
    new_cert = attest(client, chip)["certificate"]
    assert issuer_of(new_cert) == new_ca.subject
    assert issuer_of(old_cert) == old_ca.subject
    with world.sessions() as session:
        ca_ids = {r.serial: r.ca_id for r in session.scalars(select(DeviceCertificate))}
    assert ca_ids[format(serial_of(new_cert), "x")] == body["successor"]["id"]
    assert ca_ids[format(serial_of(old_cert), "x")] == body["retiring"]["id"]
    crls = crl_bundle(client, token)
    assert [c.issuer for c in crls] == [new_ca.subject, old_ca.subject]
    crl_pem = client.get("/api/v1/ca/crl", headers=bearer(token)).content
    for cert in (old_cert, new_cert, old_other):
        ok = openssl_verify(tmp_path, bundle, cert, at=clock(), crl=crl_pem)
        assert ok.returncode == 0, ok.stdout + ok.stderr

    # A revocation during the overlap reaches the certificates of both CAs.
    assert client.post(f"/api/v1/devices/{chip.device_id}/revoke", headers=bearer(token)).status_code == 200
    crl_pem = client.get("/api/v1/ca/crl", headers=bearer(token)).content
    for cert in (old_cert, new_cert):
        refused = openssl_verify(tmp_path, bundle, cert, at=clock(), crl=crl_pem)
        assert "certificate revoked" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    ok = openssl_verify(tmp_path, bundle, old_other, at=clock(), crl=crl_pem)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # After the overlap: the old CA is retired; the bundle and the CRLs are the successor's alone.
    clock.advance(dt.timedelta(hours=48))
    later_bundle, [only] = bundle_certs(client, token)
    assert only.subject == new_ca.subject
    [crl] = crl_bundle(client, token)
    assert crl.issuer == new_ca.subject
    fresh = attest(client, other)["certificate"]
    ok = openssl_verify(tmp_path, later_bundle, fresh, at=clock())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # An old-CA certificate no longer verifies (checked inside its validity, so only the retirement refuses it).
    refused = openssl_verify(tmp_path, later_bundle, old_other, at=clock() - dt.timedelta(hours=48))
    assert refused.returncode != 0
    assert "unable to get local issuer certificate" in refused.stdout + refused.stderr
    states = {r["id"]: r["state"] for r in client.get("/api/v1/ca/authorities", headers=bearer(token)).json()}
    assert states == {body["successor"]["id"]: "signing", body["retiring"]["id"]: "retired"}
    missing = client.get(
        "/api/v1/ca/crl", params={"format": "der", "ca_id": body["retiring"]["id"]}, headers=bearer(token)
    )
    assert missing.status_code == 404


def test_rotation_needs_admin_and_bounded_overlap(
    client: TestClient, world: World, make_tenant: object, session_factory: sessionmaker[Session]
) -> None:
    token = world.tenant.admin_token
    for overlap in (-1, 90 * 24 + 1, "soon"):
        bad = client.post("/api/v1/ca/rotate", json={"overlap_hours": overlap}, headers=bearer(token))
        assert bad.status_code == 422, bad.text
        assert set(bad.json()) == {"error", "detail"}
    created = client.post(
        "/api/v1/tokens", json={"name": "reader", "role": "contributor"}, headers=bearer(token)
    ).json()
    low = client.post("/api/v1/ca/rotate", json={}, headers=bearer(created["token"]))
    assert low.status_code == 403
    assert client.post("/api/v1/ca/rotate", json={}).status_code == 401


def test_a_tenant_trusts_at_most_three_cas(client: TestClient, world: World) -> None:
    token = world.tenant.admin_token
    for _ in range(2):
        assert client.post("/api/v1/ca/rotate", json={}, headers=bearer(token)).status_code == 201
    refused = client.post("/api/v1/ca/rotate", json={}, headers=bearer(token))
    assert refused.status_code == 409
    assert refused.json()["error"] == "too_many_cas"
    assert "bastion tenant ca list" in refused.json()["detail"]
    assert len(x509.load_pem_x509_certificates(client.get("/api/v1/ca", headers=bearer(token)).content)) == 3


def test_emergency_rotation_with_no_overlap_retires_the_old_ca_at_once(
    client: TestClient, world: World, tmp_path: Path, clock: FakeClock
) -> None:
    token = world.tenant.admin_token
    chip = world.device()
    old_cert = attest(client, chip)["certificate"]
    assert client.post("/api/v1/ca/rotate", json={"overlap_hours": 0}, headers=bearer(token)).status_code == 201
    bundle, [_only] = bundle_certs(client, token)
    refused = openssl_verify(tmp_path, bundle, old_cert, at=clock())
    assert refused.returncode != 0
    new_cert = attest(client, chip)["certificate"]
    ok = openssl_verify(tmp_path, bundle, new_cert, at=clock())
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_overlap_keeps_capabilities_of_the_old_ca_and_the_device_gets_the_whole_bundle(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    admin = world.tenant.admin_token
    product(client, admin)
    chip = world.device()
    assign(client, admin, chip.device_id, "widget/Field Test")
    capability = base64.b64decode(issue(client, admin, chip.device_id).json()["capability"])  # signed by the old CA
    assert client.post("/api/v1/ca/rotate", json={"overlap_hours": 48}, headers=bearer(admin)).status_code == 201
    answer = attest_with(client, chip, capability, clock)
    assert answer.status_code == 200, answer.text
    _, bundle = bundle_certs(client, admin)
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in answer.json()["ca_chain"]]
    assert chain == bundle  # signing CA first, then the CA in its overlap
    # After the overlap the old CA's capability no longer verifies: it must be reissued.
    clock.advance(dt.timedelta(hours=48, seconds=31))  # past the overlap and the signing-CA cache TTL
    refused = attest_with(client, chip, capability, clock)
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("capability_")
    fresh = base64.b64decode(issue(client, admin, chip.device_id).json()["capability"])
    assert attest_with(client, chip, fresh, clock).status_code == 200
