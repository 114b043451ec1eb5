"""Device certificates on record, per-CA CRLs, and revocation that reaches them (SQLite and PostgreSQL).

The attack: a revoked device still holds a 24 h certificate that relying parties
accept. Here revoking the device puts every unexpired certificate it holds on its
CA's CRL at once, and ``openssl verify -crl_check`` with that CRL refuses it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from attest_sim import SimDevice
from attest_world import World
from cryptography import x509
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.crl import load_crl, load_crl_bundle, verify_crl
from bastion.service.ca.refresh import crl_refresher, refresh_crls_once
from bastion.service.ca.revocation import revoke_device_certificates
from bastion.service.devices import endpoints as device_endpoints
from bastion.service.errors import InvalidRequest, SealedKeyError
from bastion.service.models import AuditEvent, DeviceCertificate, TenantCA
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer

EAT = {"Content-Type": "application/eat+cwt"}


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


def attest(client: TestClient, chip: SimDevice) -> dict[str, object]:
    answer = client.post("/api/v1/attestation/challenge", json={"device_id": chip.device_id})
    assert answer.status_code == 200, answer.text
    raw = answer.json()["nonce"]
    nonce = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    response = client.post("/api/v1/attestation", content=chip.eat(nonce), headers=EAT)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def serial_of(pem: object) -> int:
    assert isinstance(pem, str)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def crl_bundle(client: TestClient, token: str) -> list[x509.CertificateRevocationList]:
    response = client.get("/api/v1/ca/crl", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-pem-file"
    return load_crl_bundle(response.content)


def openssl_verify(
    tmp_path: Path, bundle: str, cert_pem: object, *, at: dt.datetime, crl: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` against the trust bundle, with ``-crl_check`` when a CRL bundle is given."""
    assert isinstance(cert_pem, str)
    (tmp_path / "bundle.pem").write_text(bundle)
    (tmp_path / "cert.pem").write_text(cert_pem)
    argv = ["openssl", "verify", "-CAfile", str(tmp_path / "bundle.pem"), "-purpose", "sslclient"]
    argv += ["-attime", str(int(at.timestamp()))]
    if crl is not None:
        (tmp_path / "crl.pem").write_bytes(crl)
        argv += ["-crl_check", "-CRLfile", str(tmp_path / "crl.pem")]
    return subprocess.run([*argv, str(tmp_path / "cert.pem")], capture_output=True, text=True, check=False)


def test_every_issued_certificate_is_on_record(client: TestClient, world: World, clock: FakeClock) -> None:
    chip = world.device()
    first = attest(client, chip)
    clock.advance(dt.timedelta(minutes=5))
    second = attest(client, chip)
    listed = client.get(
        "/api/v1/ca/certificates", params={"device_id": chip.device_id}, headers=bearer(world.tenant.admin_token)
    )
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert [int(r["serial"], 16) for r in rows] == [serial_of(second["certificate"]), serial_of(first["certificate"])]
    assert {r["device_id"] for r in rows} == {chip.device_id}
    assert dt.datetime.fromisoformat(rows[0]["not_after"]) == clock() + dt.timedelta(hours=24)
    assert rows[0]["revoked_at"] is None
    with world.sessions() as session:
        [ca_id] = session.scalars(select(TenantCA.id)).all()
    assert {r["ca_id"] for r in rows} == {ca_id}


def test_revoking_a_device_puts_its_unexpired_certificates_on_the_crl(
    client: TestClient, world: World, clock: FakeClock, tmp_path: Path
) -> None:
    token = world.tenant.admin_token
    chip, bystander = world.device(), world.device()
    expired = attest(client, chip)
    clock.advance(dt.timedelta(hours=25))
    live = [attest(client, chip), attest(client, chip)]
    good = attest(client, bystander)
    ca_pem = client.get("/api/v1/ca", headers=bearer(token)).text
    [before] = crl_bundle(client, token)
    assert len(list(before)) == 0

    # A relying party that checks CRLs accepts the device's certificate before the revocation.
    ok = openssl_verify(
        tmp_path,
        ca_pem,
        live[0]["certificate"],
        at=clock(),
        crl=client.get("/api/v1/ca/crl", headers=bearer(token)).content,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    revoked = client.post(f"/api/v1/devices/{chip.device_id}/revoke", headers=bearer(token))
    assert revoked.status_code == 200, revoked.text

    [crl] = crl_bundle(client, token)
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    verify_crl(crl, ca, now=clock())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > (
        before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )
    assert crl.next_update_utc == clock() + dt.timedelta(hours=24)
    listed = {entry.serial_number for entry in crl}
    assert listed == {serial_of(c["certificate"]) for c in live}  # the expired one is left off (RFC 5280 5.1.2.6)
    entry = crl.get_revoked_certificate_by_serial_number(serial_of(live[0]["certificate"]))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.privilege_withdrawn
    assert serial_of(expired["certificate"]) not in listed

    crl_pem = client.get("/api/v1/ca/crl", headers=bearer(token)).content
    for cert in live:
        refused = openssl_verify(tmp_path, ca_pem, cert["certificate"], at=clock(), crl=crl_pem)
        assert refused.returncode != 0
        assert "certificate revoked" in refused.stdout + refused.stderr
    fine = openssl_verify(tmp_path, ca_pem, good["certificate"], at=clock(), crl=crl_pem)
    assert fine.returncode == 0, fine.stdout + fine.stderr

    # The revocation is on record, with the certificates' rows and an audit event.
    rows = client.get("/api/v1/ca/certificates", params={"device_id": chip.device_id}, headers=bearer(token)).json()
    assert [r["revocation_reason"] for r in rows] == ["privilege_withdrawn", "privilege_withdrawn", None]
    with world.sessions() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.target == f"device:{chip.device_id}"))
        assert "device.revoke" in list(actions)


def test_crl_der_and_per_ca_selection(client: TestClient, world: World) -> None:
    token = world.tenant.admin_token
    der = client.get("/api/v1/ca/crl", params={"format": "der"}, headers=bearer(token))
    assert der.status_code == 200
    assert der.headers["content-type"] == "application/pkix-crl"
    crl = load_crl(der.content)
    with world.sessions() as session:
        [ca_id] = session.scalars(select(TenantCA.id)).all()
    same = client.get("/api/v1/ca/crl", params={"format": "der", "ca_id": ca_id}, headers=bearer(token))
    assert load_crl(same.content).issuer == crl.issuer
    missing = client.get("/api/v1/ca/crl", params={"format": "der", "ca_id": ca_id + 1000}, headers=bearer(token))
    assert missing.status_code == 404
    assert "bastion tenant ca list" in missing.json()["detail"]
    for bad in ({"format": "xml"}, {"ca_id": "0"}, {"ca_id": str(2**63)}):
        answer = client.get("/api/v1/ca/crl", params=bad, headers=bearer(token))
        assert answer.status_code == 422, (bad, answer.text)
        assert set(answer.json()) == {"error", "detail"}
    assert client.get("/api/v1/ca/crl").status_code == 401


def test_crl_is_re_signed_before_it_expires_and_after_a_lost_publish(
    client: TestClient, world: World, clock: FakeClock, session_factory: sessionmaker[Session], master_key: bytes
) -> None:
    token = world.tenant.admin_token
    chip = world.device()
    issued = attest(client, chip)
    [first] = crl_bundle(client, token)
    number = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    clock.advance(dt.timedelta(hours=11))
    assert refresh_crls_once(session_factory, master_key, now=clock()) == 0  # more than 12 h left
    clock.advance(dt.timedelta(hours=2))
    assert refresh_crls_once(session_factory, master_key, now=clock()) == 1
    [second] = crl_bundle(client, token)
    assert second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1
    assert second.next_update_utc == clock() + dt.timedelta(hours=24)

    # A revocation committed, then the process died before it re-signed the CRL:
    # the refresh task notices the CRL misses it and re-signs.
    clock.advance(dt.timedelta(minutes=1))
    with session_factory() as session:
        assert (
            revoke_device_certificates(
                session, world.tenant.tenant_id, chip.device_id, reason="key_compromise", now=clock()
            )
            == 1
        )
        session.commit()
    assert refresh_crls_once(session_factory, master_key, now=clock() + dt.timedelta(seconds=1)) == 1
    [third] = crl_bundle(client, token)
    assert {e.serial_number for e in third} == {serial_of(issued["certificate"])}
    assert refresh_crls_once(session_factory, master_key, now=clock() + dt.timedelta(seconds=2)) == 0


def test_unknown_revocation_reason_is_refused(session_factory: sessionmaker[Session], world: World) -> None:
    with session_factory() as session, pytest.raises(InvalidRequest, match="unknown revocation reason"):
        revoke_device_certificates(session, world.tenant.tenant_id, "ab" * 32, reason="bored", now=world.now)


def test_another_tenant_sees_nothing_and_cannot_revoke(client: TestClient, world: World, make_tenant: object) -> None:
    assert callable(make_tenant)
    rival: CreatedTenant = make_tenant("rival")
    chip = world.device()
    attest(client, chip)
    theirs = client.get("/api/v1/ca/certificates", headers=bearer(rival.admin_token)).json()
    assert theirs == []
    denied = client.post(f"/api/v1/devices/{chip.device_id}/revoke", headers=bearer(rival.admin_token))
    assert denied.status_code == 404
    with world.sessions() as session:
        assert session.scalars(select(DeviceCertificate.revoked_at)).all() == [None]
    [rival_crl] = crl_bundle(client, rival.admin_token)
    [own_crl] = crl_bundle(client, world.tenant.admin_token)
    assert rival_crl.issuer != own_crl.issuer


def test_revoked_certificates_past_expiry_leave_the_crl(
    client: TestClient, world: World, clock: FakeClock, session_factory: sessionmaker[Session]
) -> None:
    token = world.tenant.admin_token
    chip = world.device()
    attest(client, chip)
    client.post(f"/api/v1/devices/{chip.device_id}/revoke", headers=bearer(token))
    [crl] = crl_bundle(client, token)
    assert len(list(crl)) == 1
    clock.advance(dt.timedelta(hours=25))
    [later] = crl_bundle(client, token)  # stale, so re-signed on read
    assert len(list(later)) == 0
    with session_factory() as session:  # the record itself stays
        [row] = session.scalars(select(DeviceCertificate)).all()
        assert row.revocation_reason == "privilege_withdrawn"


def test_the_background_task_signs_missing_crls(
    world: World, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    async def run() -> None:
        async with crl_refresher(session_factory, master_key, clock, interval_s=0.01):
            for _ in range(500):
                await asyncio.sleep(0.01)
                with session_factory() as session:
                    if session.scalar(select(TenantCA.crl_der)) is not None:
                        return
            raise AssertionError("the CRL refresh task signed nothing")

    asyncio.run(run())
    with session_factory() as session:
        [row] = session.scalars(select(TenantCA)).all()
        assert row.crl_number == 1
        assert row.crl_next_update == clock() + dt.timedelta(hours=24)
        assert row.crl_der is not None
        verify_crl(load_crl(row.crl_der), x509.load_pem_x509_certificate(row.cert_pem.encode()), now=clock())


def test_a_failed_publish_after_a_revocation_keeps_the_revocation_and_the_task_catches_up(
    client: TestClient,
    world: World,
    *,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = world.tenant.admin_token
    chip = world.device()
    issued = attest(client, chip)
    crl_bundle(client, token)

    def broken(*_args: object, **_kwargs: object) -> int:
        raise SealedKeyError("simulated: the CA key does not open")

    monkeypatch.setattr(device_endpoints, "publish_tenant_crls", broken)
    clock.advance(dt.timedelta(seconds=1))
    answer = client.post(f"/api/v1/devices/{chip.device_id}/revoke", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked_at"] is not None
    with session_factory() as session:
        [stored] = session.scalars(select(TenantCA.crl_der)).all()
    assert stored is not None
    assert len(list(load_crl(stored))) == 0  # not yet on the CRL
    assert refresh_crls_once(session_factory, master_key, now=clock() + dt.timedelta(seconds=1)) == 1
    [crl] = crl_bundle(client, token)
    assert {e.serial_number for e in crl} == {serial_of(issued["certificate"])}


@pytest.mark.parametrize("how", ["unclaim", "release"])
def test_unclaim_and_release_put_the_old_tenants_unexpired_certificates_on_its_crl(
    client: TestClient, world: World, how: str, make_tenant: Callable[[str], CreatedTenant]
) -> None:
    second_tenant = make_tenant("receiver")
    token = world.tenant.admin_token
    chip = world.device()
    issued = attest(client, chip)
    body = {"to_tenant": second_tenant.tenant_id} if how == "release" else None
    ended = client.post(f"/api/v1/devices/{chip.device_id}/{how}", json=body, headers=bearer(token))
    assert ended.status_code == 200, ended.text

    [crl] = crl_bundle(client, token)
    entry = crl.get_revoked_certificate_by_serial_number(serial_of(issued["certificate"]))
    assert entry is not None, "the old tenant's certificate must not outlive its ownership"
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.affiliation_changed
    history = client.get(f"/api/v1/devices/{chip.device_id}/ownership", headers=bearer(token)).json()
    assert "1 unexpired certificate(s) revoked" in history[0]["detail"]
