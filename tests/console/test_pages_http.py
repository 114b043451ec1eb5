"""The fleet, products, deployments, OS feeds and error-bucket pages, in-process (TestClient), SQLite and PostgreSQL.

Each page renders for a reader with its data escaped; the write controls show only to
a role that may use them, the writes refuse a reader and a missing CSRF token (and
leave a record), and go through the API's domain functions (the audit names the token).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.service.console.headers import CSP
from bastion.service.models import AuditEvent, Device, ErrorBucket, OsImage, Rollout
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient
from console._pages_world import XSS, FakeHealth, FakePublisher, Fleet, device_id, make_product, seed_fleet
from console.conftest import sign_in

PAGES = ("/console/fleet", "/console/products", "/console/deployments", "/console/osfeeds", "/console/buckets")


@pytest.fixture
def fake_services(app: FastAPI) -> FakeHealth:
    app.state.tuf_publisher = FakePublisher()
    health = FakeHealth()
    app.state.rollout_health = health
    return health


def _audit(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


@pytest.mark.parametrize("path", PAGES)
def test_a_page_needs_a_session(client: TestClient, path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/console/signin?next=")


def test_every_page_renders_for_a_reader_with_names_as_text(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    with session_factory() as session:
        seed_fleet(session, tenant.tenant_id, now=clock())
        make_product(session, tenant.tenant_id, now=clock(), name=XSS, groups=(XSS,))
        session.add(
            ErrorBucket(
                id="b0123456789abcdef",
                tenant_id=tenant.tenant_id,
                fingerprint="f" * 64,
                algorithm=1,
                category="AppCrash",
                event_type="signal",
                component_id="",
                title=XSS,
                state="open",
                first_seen=clock(),
                last_seen=clock(),
                event_count=3,
                device_count=1,
                first_version="1",
                last_version="1",
            )
        )
        session.commit()
    sign_in(client, make_token(tenant, "reader"))
    for path in (
        *PAGES,
        "/console/fleet?window=7d",
        "/console/fleet?window=bogus",
        "/console/buckets/b0123456789abcdef",
    ):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-security-policy"] == CSP
        assert "<script>alert(1)" not in r.text, path
    fleet = client.get("/console/fleet").text
    assert "10 devices" in fleet
    assert "<svg" in fleet
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/console/products").text
    assert "&lt;script&gt;" in client.get("/console/buckets").text
    assert "Deploy</button>" not in client.get("/console/deployments").text  # a reader sees no create form


def test_a_bucket_of_another_tenant_is_not_found(
    client: TestClient,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    acme, other = make_tenant("acme"), make_tenant("other")
    with session_factory() as session:
        session.add(
            ErrorBucket(
                id="bother",
                tenant_id=other.tenant_id,
                fingerprint="e" * 64,
                algorithm=1,
                category="AppCrash",
                event_type="signal",
                component_id="",
                title="theirs",
                state="open",
                first_seen=clock(),
                last_seen=clock(),
                event_count=1,
                device_count=1,
                first_version="1",
                last_version="1",
            )
        )
        session.commit()
    sign_in(client, acme.admin_token)
    r = client.get("/console/buckets/bother")
    assert r.status_code == 404
    assert "theirs" not in r.text
    assert client.get("/console/buckets/..%2Fx").status_code in (400, 404)


def test_the_csv_download_is_the_apis_with_the_session(
    client: TestClient, tenant: CreatedTenant, make_token: Callable[[CreatedTenant, str], str]
) -> None:
    sign_in(client, make_token(tenant, "reader"))
    r = client.get("/console/buckets/download.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.startswith("DeviceId,EventCategory,")
    bad = client.get("/console/buckets/download.csv?since=yesterday")
    assert bad.status_code == 400
    assert "ISO 8601" in bad.text
    client.cookies.clear()
    assert client.get("/console/buckets/download.csv", follow_redirects=False).status_code == 303


def _staged_world(
    client: TestClient, tenant: CreatedTenant, sessions: sessionmaker[Session], clock: FakeClock
) -> tuple[Fleet, str, int]:
    fleet_api = Fleet(client, tenant.admin_token, sessions)
    group = fleet_api.groups["Production"]
    with sessions() as session:
        session.add_all(
            Device(
                device_id=device_id(n), tenant_id=tenant.tenant_id, claimed_at=clock(), claimed_by="t", group_id=group
            )
            for n in range(20)
        )
        session.commit()
    v1, v2 = fleet_api.app("1.0.0"), fleet_api.app("2.0.0")
    assert fleet_api.deploy(group, str(v1["id"])).status_code == 201
    return fleet_api, group, int(v2["id"])


def test_a_contributor_creates_a_staged_deployment_and_aborts_it(  # noqa: PLR0917 - pytest passes fixtures by position
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    _, group, v2 = _staged_world(client, tenant, session_factory, clock)
    csrf = sign_in(client, make_token(tenant, "contributor"))
    page = client.get("/console/deployments")
    assert "Deploy</button>" in page.text
    r = client.post(
        "/console/deployments",
        data={"csrf_token": csrf, "group": group, "images": str(v2), "stages": "20,50,100", "soak_seconds": "60"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    detail = client.get(r.headers["location"])
    assert detail.status_code == 200
    assert 'hx-get="/console/deployments/' in detail.text  # live while it runs
    assert "running" in detail.text
    assert ">Abort</button>" in detail.text
    assert ">Resume</button>" not in detail.text
    deployment_id = int(r.headers["location"].rsplit("/", 1)[1])
    fragment = client.get(f"/console/deployments/{deployment_id}/progress")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="progress"')
    aborted = client.post(
        f"/console/deployments/{deployment_id}/abort", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert aborted.status_code == 303
    after = client.get(f"/console/deployments/{deployment_id}")
    assert "aborted" in after.text
    assert "hx-get" not in after.text.split('id="progress"', 1)[1].split(">", 1)[0]  # polling stops
    audit = _audit(session_factory, "rollout.abort")
    assert len(audit) == 1
    assert audit[0].actor.startswith("token:")
    assert [e.outcome for e in _audit(session_factory, "deployment.create")] == ["ok", "ok"]
    again = client.post(f"/console/deployments/{deployment_id}/abort", data={"csrf_token": csrf})
    assert again.status_code == 409  # the domain's Conflict, as a page
    assert "already" in again.text


def test_resume_shows_on_a_halted_rollout_and_a_reader_cannot_resume_it(  # noqa: PLR0917 - pytest passes fixtures by position
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    fleet_api, group, v2 = _staged_world(client, tenant, session_factory, clock)
    body = {"group": group, "images": [str(v2)], "rollout": {"stages": [20, 100], "soak_seconds": 60}}
    deployment_id = fleet_api.call("POST", "/deployments", json=body).json()["id"]
    with session_factory() as session:
        rollout = session.scalars(select(Rollout)).one()
        rollout.state, rollout.halt_reason = "halted", f"crash_drop: {XSS}"
        session.commit()
    reader_csrf = sign_in(client, make_token(tenant, "reader"))
    page = client.get(f"/console/deployments/{deployment_id}")
    assert "Halted: crash_drop: &lt;script&gt;" in page.text
    assert ">Resume</button>" not in page.text  # a reader sees no write control
    refused = client.post(f"/console/deployments/{deployment_id}/resume", data={"csrf_token": reader_csrf})
    assert refused.status_code == 403
    assert [e.outcome for e in _audit(session_factory, "console.insufficient_role")] == ["denied"]
    client.cookies.clear()
    csrf = sign_in(client, make_token(tenant, "contributor"))
    assert ">Resume</button>" in client.get(f"/console/deployments/{deployment_id}").text
    no_csrf = client.post(f"/console/deployments/{deployment_id}/resume", data={})
    assert no_csrf.status_code == 403
    assert _audit(session_factory, "console.csrf_refused")
    assert not _audit(session_factory, "rollout.resume")
    ok = client.post(f"/console/deployments/{deployment_id}/resume", data={"csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code == 303
    assert len(_audit(session_factory, "rollout.resume")) == 1
    with session_factory() as session:
        assert session.scalars(select(Rollout)).one().state == "running"


def test_a_bad_deployment_form_is_a_400_page_not_a_500(
    client: TestClient, tenant: CreatedTenant, fake_services: FakeHealth
) -> None:
    csrf = sign_in(client, tenant.admin_token)
    for data in (
        {"group": "nope", "images": "1", "stages": "1,x"},
        {"group": "nope", "images": "1", "stages": "50,10"},
        {"group": "nope", "images": "1", "soak_seconds": "-1"},
        {"group": "nope", "images": "1"},
    ):
        r = client.post("/console/deployments", data={"csrf_token": csrf, **data})
        assert r.status_code in (400, 404), (data, r.status_code, r.text)
    assert client.get("/console/deployments/0").status_code == 400
    assert client.get("/console/deployments/99999").status_code == 404


def test_promotion_from_the_osfeeds_page(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    fleet_api = Fleet(client, tenant.admin_token, session_factory)
    key = generate_private_key()
    fleet_api.os(key, "1.0.0")
    evaluation = fleet_api.os(key, "1.1.0", feed="retail-eval")
    reader_csrf = sign_in(client, make_token(tenant, "reader"))
    assert "Promote to retail" not in client.get("/console/osfeeds").text
    refused = client.post(
        "/console/osfeeds/promote", data={"csrf_token": reader_csrf, "image": evaluation["measurement"]}
    )
    assert refused.status_code == 403
    client.cookies.clear()
    csrf = sign_in(client, make_token(tenant, "contributor"))
    assert "Promote to retail" in client.get("/console/osfeeds").text
    r = client.post(
        "/console/osfeeds/promote",
        data={"csrf_token": csrf, "image": evaluation["measurement"]},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with session_factory() as session:
        image = session.scalars(select(OsImage).where(OsImage.version == "1.1.0")).one()
        assert image.promoted_at is not None
    promoted = _audit(session_factory, "os_image.promote")
    assert len(promoted) == 1
    assert promoted[0].actor.startswith("token:")
    assert "Promote to retail" not in client.get("/console/osfeeds").text
    twice = client.post("/console/osfeeds/promote", data={"csrf_token": csrf, "image": evaluation["measurement"]})
    assert twice.status_code == 409


def test_fleet_page_counts_one_tenant_only(
    client: TestClient,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    acme, other = make_tenant("acme"), make_tenant("other")
    with session_factory() as session:
        seed_fleet(session, other.tenant_id, now=clock() - dt.timedelta(0), prefix="o")
    sign_in(client, acme.admin_token)
    page = client.get("/console/fleet").text
    assert "0 devices" in page
    assert "widget/" not in page


def test_fleet_breakdowns_link_to_the_filtered_device_list(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    with session_factory() as session:
        seeded = seed_fleet(session, tenant.tenant_id, now=clock())
    sign_in(client, tenant.admin_token)
    page = client.get("/console/fleet").text
    assert "/console/devices?os=1.0.0" in page
    assert f"/console/devices?group={seeded.group_ids[0]}" in page
    assert "/console/devices?standing=failed" in page
    assert "/console/devices?standing=expired" not in page  # the device list has no such filter
    listed = client.get("/console/devices?os=1.1.0")
    assert listed.status_code == 200
