"""The inputs that were 500s are 4xx with the error shape, and the audit log pages without
revealing other tenants' objects (issue 7, section 6)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fleet_world import FakePublisher, Fleet, make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.images.errors import ImageBuildError
from bastion.images.package import ImageType, build_image
from bastion.images.semver import semver_key
from bastion.service.audit.service import NOT_IN_TENANT
from bastion.service.devicestatus.report import ReportError, parse_report
from bastion.service.models import AuditEvent, Device
from bastion.service.tenants.service import CreatedTenant
from bastion.service.web import MAX_LIST_OFFSET, SessionDep
from conftest import FakeClock, TestClient, bearer

COSE = {"Content-Type": "application/cose"}
BIG = 2**63


@pytest.fixture
def fleet(app: FastAPI, client: TestClient, tenant: CreatedTenant) -> Fleet:
    app.state.tuf_publisher = FakePublisher()
    return Fleet(client, tenant.admin_token)


# -- offset=2**63 --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/devices", "/api/v1/audit"])
@pytest.mark.parametrize("offset", [BIG, BIG - 1, 2**64, MAX_LIST_OFFSET + 1])
def test_huge_offsets_are_422_not_500(client: TestClient, tenant: CreatedTenant, path: str, offset: int) -> None:
    r = client.get(path, params={"offset": offset}, headers=bearer(tenant.admin_token))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
    assert "offset" in r.json()["detail"]


def test_the_largest_offset_is_served(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.get("/api/v1/devices", params={"offset": MAX_LIST_OFFSET}, headers=bearer(tenant.admin_token))
    assert (r.status_code, r.json()) == (200, [])


def test_a_number_out_of_the_databases_range_is_422_under_any_route(app: FastAPI) -> None:
    # A route that forgets to bound its offset: the web layer's net turns the driver's overflow into a 422.
    def unbounded(session: SessionDep, offset: int = 0) -> list[str]:
        return list(session.scalars(select(Device.device_id).offset(offset).limit(1)))

    app.add_api_route("/unbounded", unbounded)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/unbounded", params={"offset": 5}).status_code == 200
        r = client.get("/unbounded", params={"offset": BIG})
    assert r.status_code == 422, r.text
    assert r.json() == {
        "error": "invalid_request",
        "detail": "a number in the request is out of range; use the bounds the operation documents",
    }


# -- Unicode digits in an image reference ----------------------------------------------------------


# Superscript two, Arabic-Indic one and three, fullwidth one-two, mathematical bold nine: str.isdigit() says yes.
@pytest.mark.parametrize("ref", ["\u00b2", "\u0661", "\u0663", "1\u00b2", "\uff11\uff12", "\U0001d7d7"])
def test_unicode_digits_in_an_image_reference_are_400(fleet: Fleet, ref: str) -> None:
    fleet.app("1.0.0")
    r = fleet.deploy(fleet.groups["Production"], ref)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_image_ref"
    assert "neither an image id nor a SHA-256" in r.json()["detail"]


# -- a CBOR map where a string belongs ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["kind", "component_id", "version", "detail"])
def test_a_cbor_map_where_a_string_belongs_is_refused_by_the_report_parser(field: str) -> None:
    event: dict[str, object] = {"at": 1, "kind": "app_started", "component_id": "c", "version": "1", "detail": ""}
    event[field] = {"a": "map"}
    import cbor2

    payload = cbor2.dumps(
        {"device_id": "ab" * 32, "iat": 1, "os_version": "1", "boot_slot": "A", "installed": [], "events": [event]}
    )
    with pytest.raises(ReportError):
        parse_report(payload, max_events=8, max_installed=8, max_detail_chars=100)


def test_a_status_report_with_a_map_for_a_string_is_400_and_recorded(
    fleet: Fleet, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    body = device.report(iat=clock(), events=[{"at": 1, "kind": {"not": "a string"}}])
    r = fleet.client.post("/api/v1/device/status", content=body, headers=COSE)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error", "detail"}
    assert "events[0].kind" in r.json()["detail"]
    with session_factory() as session:
        refused = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "device.status", AuditEvent.outcome == "denied")
        ).all()
    assert refused, "the refused report is recorded"


# -- audit paging and isolation -----------------------------------------------------------------------


def test_audit_pages_with_limit_and_offset_and_says_when_cut(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    with session_factory() as session:
        for i in range(25):
            session.add(
                AuditEvent(
                    at=clock(), tenant_id=tenant.tenant_id, actor="test", action="x", target=str(i), outcome="ok"
                )
            )
        session.commit()
    admin = bearer(tenant.admin_token)
    seen: list[int] = []
    offset: str | None = "0"
    pages = 0
    while offset is not None:
        r = client.get("/api/v1/audit", params={"limit": 10, "offset": offset}, headers=admin)
        assert r.status_code == 200
        seen.extend(e["id"] for e in r.json())
        offset = r.headers.get("x-next-offset")
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) >= 25  # every event once, newest first
    assert seen == sorted(seen, reverse=True)
    last = client.get("/api/v1/audit", params={"limit": 1000}, headers=admin)
    assert "x-next-offset" not in last.headers


def _view(client: TestClient, token: str) -> list[tuple[str, str, str]]:
    events = client.get("/api/v1/audit", headers=bearer(token)).json()
    return [(e["action"], e["outcome"], e["detail"]) for e in events if e["outcome"] == "denied"]


def test_probing_another_tenants_objects_looks_like_probing_missing_ones(
    fleet: Fleet,
    client: TestClient,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    owner = fleet
    image = owner.app("1.0.0")
    deployment = owner.deploy(owner.groups["Production"], str(image["id"])).json()
    device_id = "cd" * 32
    with session_factory() as session:
        session.add(
            Device(
                device_id=device_id,
                tenant_id=client.get("/api/v1/whoami", headers=bearer(owner.token)).json()["tenant_id"],
                claimed_at=clock(),
                claimed_by="test",
            )
        )
        session.commit()

    def probe(token: str, ids: dict[str, str]) -> list[tuple[str, str, str]]:
        prober = Fleet.__new__(Fleet)
        prober.client, prober.token = client, token
        answers = [
            prober.call("GET", f"/devices/{ids['device']}"),
            prober.call("GET", f"/products/{ids['product']}"),
            prober.call("GET", f"/device-groups/{ids['group']}"),
            prober.call("GET", f"/deployments/{ids['deployment']}"),
        ]
        assert [a.status_code for a in answers] == [404] * 4
        return _view(client, token)

    real = {
        "device": device_id,
        "product": client.get("/api/v1/products", headers=bearer(owner.token)).json()[0]["id"],
        "group": owner.groups["Production"],
        "deployment": str(deployment["id"]),
    }
    missing = {
        "device": "ef" * 32,
        "product": "00000000-0000-0000-0000-000000000000",
        "group": "00000000-0000-0000-0000-000000000001",
        "deployment": "999999",
    }
    seen_real = probe(make_tenant("prober-one").admin_token, real)
    seen_missing = probe(make_tenant("prober-two").admin_token, missing)
    assert seen_real == seen_missing
    assert len(seen_real) == 4
    assert {detail for *_, detail in seen_real} == {NOT_IN_TENANT}
    # The owner's view holds nothing the probers wrote.
    assert _view(client, owner.token) == []


# -- Unicode digits in versions and times ----------------------------------------------------------
# A str pattern's \d matches every script's decimal digits, and int() reads them: "\u0661.0.0" (Arabic-Indic
# one) passed as version 1.0.0, and "1\u0663:00" as 13:00. Each is refused now.


@pytest.mark.parametrize("version", ["\u0661.0.0", "1\u0663.0.0", "1.0.\u0669", "1.0.0\n"])
def test_a_version_with_non_ascii_digits_is_not_a_version(version: str) -> None:
    with pytest.raises(ValueError, match="not a semantic version"):
        semver_key(version)
    with pytest.raises(ImageBuildError, match="not a semantic version"):
        build_image(
            io.BytesIO(),
            io.BytesIO(b"payload"),
            image_type=ImageType.APP,
            component_id=str(uuid.uuid4()),
            version=version,
            security_version=1,
            key=generate_private_key(),
        )


def test_a_window_start_with_non_ascii_digits_is_refused(fleet: Fleet) -> None:
    r = fleet.call(
        "PATCH",
        f"/device-groups/{fleet.groups['Production']}",
        json={"maintenance_window": {"start": "1\u0663:00", "duration_minutes": 60}},
    )
    assert r.status_code in {400, 422}, r.text
    assert set(r.json()) == {"error", "detail"}
