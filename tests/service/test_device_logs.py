"""Device log requests: operators ask (admin/contributor, audited, bounded), devices upload a signed tail once.

Attacks: a reader asking, another device uploading for this request, an oversized text,
an unknown request, a revoked device; each is refused, recorded, and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import cbor2
import pytest
from fleet_world import StatusDevice, make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.service.errorreports.log_requests import pending_for
from bastion.service.models import AuditEvent, Device, DeviceLogRequest
from bastion.service.ownership.repository import delete_device_dependents
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

COSE = {"Content-Type": "application/cose"}
APP = "app1"


def _token(client: TestClient, admin: str, role: str) -> str:
    answer = client.post("/api/v1/tokens", json={"name": f"{role} t", "role": role}, headers=bearer(admin))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def _upload(
    device: StatusDevice, request_id: str, *, now: dt.datetime, text: str = "line 1\nline 2\n", **kw: Any
) -> bytes:
    payload = {
        "v": 1,
        "device_id": device.device_id,
        "request_id": request_id,
        "component_id": APP,
        "iat": int(now.timestamp()),
        "text": text,
        "truncated": False,
    } | kw
    return sign1(cbor2.dumps(payload, canonical=True), device.key, x5chain=[certificate_der(device.cert)])


def _ask(client: TestClient, token: str, device_id: str, component: str = APP) -> Any:
    return client.post(
        f"/api/v1/devices/{device_id}/log-requests", json={"component_id": component}, headers=bearer(token)
    )


def _post(client: TestClient, body: bytes) -> tuple[int, str]:
    r = client.post("/api/v1/device/logs", content=body, headers=COSE)
    return r.status_code, r.json().get("error") or r.json().get("status")


def _denied(sessions: sessionmaker[Session], action: str) -> list[str]:
    with sessions() as session:
        query = select(AuditEvent.detail).where(AuditEvent.action == action, AuditEvent.outcome == "denied")
        return list(session.scalars(query).all())


@pytest.fixture
def device(
    tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> StatusDevice:
    return make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())


def test_a_contributor_asks_the_device_uploads_once_and_the_operator_reads_the_tail(
    client: TestClient,
    tenant: CreatedTenant,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    contributor = _token(client, tenant.admin_token, "contributor")
    asked = _ask(client, contributor, device.device_id)
    assert asked.status_code == 201, asked.text
    request = asked.json()
    assert request["state"] == "pending"
    assert request["max_bytes"] == 16 * 1024
    with session_factory() as session:
        assert pending_for(session, device.device_id, now=clock()) == [
            {"request_id": request["request_id"], "component_id": APP, "max_bytes": 16 * 1024}
        ]
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "device.log_request")).all()
        assert [a.outcome for a in audited] == ["ok"]
    body = _upload(device, request["request_id"], now=clock())
    assert _post(client, body) == (200, "delivered")
    assert _post(client, body) == (200, "duplicate")  # idempotent
    shown = client.get(
        f"/api/v1/devices/{device.device_id}/log-requests/{request['request_id']}", headers=bearer(contributor)
    ).json()
    assert shown["state"] == "delivered"
    assert shown["text"] == "line 1\nline 2\n"
    listed = client.get(f"/api/v1/devices/{device.device_id}/log-requests", headers=bearer(contributor)).json()
    assert [r["request_id"] for r in listed] == [request["request_id"]]
    assert listed[0]["text"] is None
    with session_factory() as session:
        assert pending_for(session, device.device_id, now=clock()) == []


def test_a_reader_cannot_ask_but_may_read(
    client: TestClient, tenant: CreatedTenant, device: StatusDevice, session_factory: sessionmaker[Session]
) -> None:
    reader = _token(client, tenant.admin_token, "reader")
    refused = _ask(client, reader, device.device_id)
    assert refused.status_code == 403
    assert _denied(session_factory, "auth.insufficient_role")
    listed = client.get(f"/api/v1/devices/{device.device_id}/log-requests", headers=bearer(reader))
    assert listed.status_code == 200
    assert listed.json() == []


def test_pending_requests_are_bounded_and_expire(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    device = make_status_device(
        session_factory,
        owner_tenant=tenant.tenant_id,
        master_key=master_key,
        now=clock(),
        lifetime=dt.timedelta(days=3),
    )
    ids = [_ask(client, tenant.admin_token, device.device_id).json()["request_id"] for _ in range(4)]
    assert _ask(client, tenant.admin_token, device.device_id).json()["error"] == "too_many_log_requests"
    assert _denied(session_factory, "device.log_request")
    clock.advance(dt.timedelta(hours=25))
    with session_factory() as session:
        assert pending_for(session, device.device_id, now=clock()) == []
    assert _post(client, _upload(device, ids[0], now=clock())) == (404, "unknown_log_request")
    states = client.get(f"/api/v1/devices/{device.device_id}/log-requests", headers=bearer(tenant.admin_token)).json()
    assert {r["state"] for r in states} == {"expired"}
    assert _ask(client, tenant.admin_token, device.device_id).status_code == 201


def test_uploads_that_must_not_deliver_are_refused_recorded_and_change_nothing(
    client: TestClient,
    tenant: CreatedTenant,
    device: StatusDevice,
    *,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    rid = _ask(client, tenant.admin_token, device.device_id).json()["request_id"]
    other = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    # Another device uploads for this device's request (signed by itself, naming itself).
    assert _post(client, _upload(other, rid, now=now)) == (404, "unknown_log_request")
    # ... or naming this device (its own key and certificate).
    assert _post(client, _upload(other, rid, now=now, device_id=device.device_id)) == (403, "device_mismatch")
    assert _post(client, _upload(device, "lr" + "0" * 16, now=now)) == (404, "unknown_log_request")
    assert _post(client, _upload(device, rid, now=now, component_id="app2")) == (404, "unknown_log_request")
    assert _post(client, _upload(device, rid, now=now, text="x" * (16 * 1024 + 1))) == (413, "log_too_large")
    assert _post(client, b"\x00" * 64) == (400, "malformed_log")
    forged = bytearray(_upload(device, rid, now=now))
    forged[-5] ^= 1  # inside the signature
    assert _post(client, bytes(forged))[0] in (400, 403)
    with session_factory() as session:
        row = session.get(DeviceLogRequest, rid)
        assert row is not None
        assert row.state == "pending"
        assert row.text is None
        dev = session.get(Device, device.device_id)
        assert dev is not None
        dev.revoked_at = now
        session.commit()
    assert _post(client, _upload(device, rid, now=now)) == (403, "device_revoked")
    assert len(_denied(session_factory, "device.log_upload")) >= 5
    with session_factory() as session:
        row = session.get(DeviceLogRequest, rid)
        assert row is not None
        assert row.state == "pending"


def test_unclaim_deletes_the_devices_log_requests(
    client: TestClient, tenant: CreatedTenant, device: StatusDevice, session_factory: sessionmaker[Session]
) -> None:
    assert _ask(client, tenant.admin_token, device.device_id).status_code == 201
    with session_factory() as session:
        delete_device_dependents(session, device.device_id)
        session.commit()
        assert session.scalars(select(DeviceLogRequest)).all() == []
