"""Signed device status reports: stored as status and history; replays, strangers and stale reports refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import cbor2
import pytest
from fastapi import FastAPI
from fleet_world import APP_COMPONENT, FakePublisher, Fleet, event, make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.crypto.keys import generate_private_key
from bastion.service.models import AuditEvent, DeviceUpdateEvent, DeviceUpdateStatus
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient

COSE = {"Content-Type": "application/cose"}


@pytest.fixture
def fleet(app: FastAPI, client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]) -> Fleet:
    app.state.tuf_publisher = FakePublisher()
    return Fleet(client, tenant.admin_token, session_factory)


def _post(client: TestClient, body: bytes) -> tuple[int, str]:
    r = client.post("/api/v1/device/status", content=body, headers=COSE)
    return r.status_code, r.json().get("error", "") if r.status_code != 200 else "ok"


def test_report_is_stored_and_shown_with_the_device(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    group = fleet.groups["Production"]
    fleet.call("POST", f"/devices/{device.device_id}/group", json={"group": group})
    image = fleet.app("1.0.0")
    deployment = fleet.deploy(group, str(image["id"])).json()
    t1 = clock()
    body = device.report(
        iat=t1,
        os_version="1.1.0",
        installed=[(APP_COMPONENT, "1.0.0")],
        events=[
            event(t1 - dt.timedelta(seconds=30), "os_confirmed", version="1.1.0"),
            event(t1, "app_installed", APP_COMPONENT, "1.0.0", "line1\nline2"),
        ],
    )
    r = fleet.client.post("/api/v1/device/status", content=body, headers=COSE)
    assert r.status_code == 200, r.text
    assert r.json()["device_id"] == device.device_id
    status = fleet.call("GET", f"/devices/{device.device_id}/deployment-status").json()
    assert status["status"]["os_version"] == "1.1.0"
    assert status["status"]["installed"] == [{"component_id": APP_COMPONENT, "version": "1.0.0"}]
    assert status["status"]["last_result"] == "app_installed"
    assert status["status"]["deployment_id"] == deployment["id"]
    assert [e["kind"] for e in status["history"]] == ["app_installed", "os_confirmed"]
    assert status["history"][0]["detail"] == "line1?line2"
    # A later report adds to the history; device show lists it newest first.
    clock.advance(dt.timedelta(minutes=10))
    t2 = clock()
    body = device.report(iat=t2, os_version="1.1.0", events=[event(t2, "os_rolled_back", detail="trial failed")])
    assert _post(fleet.client, body) == (200, "ok")
    shown = fleet.call("GET", f"/devices/{device.device_id}").json()
    assert [e["kind"] for e in shown["update_history"]] == ["os_rolled_back", "app_installed", "os_confirmed"]
    assert shown["update_history"][0]["deployment_id"] == deployment["id"]


def test_replays_and_stale_reports_are_refused(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    now = clock()
    first = device.report(iat=now, events=[event(now, "app_started", APP_COMPONENT, "1.0.0")])
    assert _post(fleet.client, first) == (200, "ok")
    assert _post(fleet.client, first) == (409, "replayed_report")
    older = device.report(iat=now - dt.timedelta(seconds=1))
    assert _post(fleet.client, older) == (409, "replayed_report")
    assert _post(fleet.client, device.report(iat=now + dt.timedelta(minutes=6))) == (403, "stale_report")
    assert _post(fleet.client, device.report(iat=now - dt.timedelta(minutes=6))) == (403, "stale_report")
    assert _post(fleet.client, device.report(iat=now + dt.timedelta(seconds=1))) == (200, "ok")
    with session_factory() as session:
        assert len(session.scalars(select(DeviceUpdateEvent)).all()) == 1  # the replay stored nothing
        row = session.get(DeviceUpdateStatus, device.device_id)
        assert row is not None
        assert row.last_report_iat == int(now.timestamp()) + 1
        denied = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == "device.status", AuditEvent.outcome == "denied")
        ).all()
    assert len(denied) == 2  # one per code in the window (replayed_report, stale_report)


def test_one_device_cannot_flood_its_tenants_audit_view_with_refused_reports(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    """Red team: each refused report of an authenticated device wrote an audit event, unbounded.

    A hostile (or broken) device sending stale reports at the rate limit pushed every
    real event out of its tenant's audit view; credential requests were already bounded.
    """
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    stale = device.report(iat=clock() - dt.timedelta(minutes=6))
    for _ in range(25):
        assert _post(fleet.client, stale) == (403, "stale_report")
    clock.advance(dt.timedelta(seconds=61))
    assert _post(fleet.client, device.report(iat=clock() - dt.timedelta(minutes=6))) == (403, "stale_report")
    with session_factory() as session:
        denied = session.scalars(
            select(AuditEvent.detail)
            .where(AuditEvent.action == "device.status", AuditEvent.outcome == "denied")
            .order_by(AuditEvent.id)
        ).all()
    assert len(denied) == 2
    assert "(24 more since the last record)" in denied[1]


def test_certificates_of_another_tenant_ca_are_refused(
    fleet: Fleet,
    tenant: CreatedTenant,
    *,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    other = make_tenant("mallory")
    now = clock()
    # B's CA issues a certificate that names tenant A: the chain does not reach A's CA.
    forged = make_status_device(
        session_factory,
        owner_tenant=tenant.tenant_id,
        issuing_tenant=other.tenant_id,
        cert_tenant=tenant.tenant_id,
        master_key=master_key,
        now=now,
    )
    assert _post(fleet.client, forged.report(iat=now)) == (403, "untrusted_certificate")
    # B's CA certifies (as B) a device that A claimed: B does not own it.
    stolen = make_status_device(
        session_factory, owner_tenant=tenant.tenant_id, issuing_tenant=other.tenant_id, master_key=master_key, now=now
    )
    assert _post(fleet.client, stolen.report(iat=now)) == (403, "unknown_device")
    with session_factory() as session:
        assert session.scalars(select(DeviceUpdateStatus)).all() == []


def test_revoked_devices_expired_certificates_and_mismatches_are_refused(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    now = clock()
    revoked = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    fleet.call("POST", f"/devices/{revoked.device_id}/revoke")
    assert _post(fleet.client, revoked.report(iat=now)) == (403, "device_revoked")

    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    other = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    assert _post(fleet.client, device.report(iat=now, device_id=other.device_id)) == (403, "device_mismatch")
    assert _post(fleet.client, device.report(iat=now, key=generate_private_key())) == (403, "bad_signature")

    clock.advance(dt.timedelta(hours=25))  # past the 24 h device certificate
    later = clock()
    assert _post(fleet.client, device.report(iat=later)) == (403, "certificate_expired")
    with session_factory() as session:
        assert session.scalars(select(DeviceUpdateStatus)).all() == []


def test_malformed_and_oversized_reports(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    now = clock()
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    assert _post(fleet.client, b"\xa0") == (400, "malformed_status")
    no_chain = sign1(cbor2.dumps({"device_id": device.device_id}), device.key)
    assert _post(fleet.client, no_chain) == (400, "malformed_status")
    bad_kind = device.report(iat=now, events=[event(now, "rebooted_for_fun")])
    assert _post(fleet.client, bad_kind) == (400, "malformed_status")
    payload = cbor2.dumps({"device_id": device.device_id, "iat": "yesterday"})
    assert _post(fleet.client, sign1(payload, device.key, x5chain=[certificate_der(device.cert)])) == (
        400,
        "malformed_status",
    )
    too_many = device.report(iat=now, events=[event(now, "app_started")] * 65)
    assert _post(fleet.client, too_many)[0] in (400, 413)
    huge = device.report(iat=now, events=[event(now, "app_started", detail="x" * 4000)] * 5)
    assert _post(fleet.client, huge) == (413, "status_too_large")
    r = fleet.client.post(
        "/api/v1/device/status", content=device.report(iat=now), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 415
    assert _post(fleet.client, device.report(iat=now)) == (200, "ok")
