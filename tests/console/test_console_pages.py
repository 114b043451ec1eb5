"""The console's tokens, audit and device pages in-process, and attacks on the console's own boundary."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.console.headers import CSP
from bastion.service.console.session import COOKIE_NAME
from bastion.service.models import ApiToken, AuditEvent, Device, DeviceGroup, Product
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer
from console.conftest import csrf_from, sign_in

XSS = "<script>alert(1)</script>"


def _audit(session_factory: sessionmaker[Session], tenant_id: str) -> list[AuditEvent]:
    with session_factory() as s:
        return list(
            s.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.id)).all()
        )


def _group(client: TestClient, token: str, product: str, name: str) -> str:
    assert client.post("/api/v1/products", json={"name": product}, headers=bearer(token)).status_code == 201
    r = client.post("/api/v1/device-groups", json={"product": product, "name": name}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_tokens_create_shows_once_list_and_revoke(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]
) -> None:
    csrf = sign_in(client, tenant.admin_token)
    r = client.post("/console/tokens", data={"csrf_token": csrf, "name": XSS, "role": "reader", "days": "7"})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert XSS not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    new = r.text.split('id="new-token-value">')[1].split("<")[0]
    assert new.startswith("bst_")
    assert client.get("/api/v1/whoami", headers=bearer(new)).json()["role"] == "reader"
    listing = client.get("/console/tokens")
    assert new not in listing.text  # shown once
    token_id = new.split("_")[1]
    assert token_id in listing.text
    r = client.post(f"/console/tokens/{token_id}/revoke", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/api/v1/whoami", headers=bearer(new)).status_code == 401
    events = [(e.action, e.actor) for e in _audit(session_factory, tenant.tenant_id)]
    admin_id = tenant.admin_token.split("_")[1]
    assert ("token.create", f"token:{admin_id}") in events
    assert ("token.revoke", f"token:{admin_id}") in events


def test_tokens_bad_input_is_a_page_not_a_5xx(client: TestClient, tenant: CreatedTenant) -> None:
    csrf = sign_in(client, tenant.admin_token)
    for data in ({"name": "", "role": "reader"}, {"name": "x", "role": "root"}, {"name": "x", "days": "9999"}):
        r = client.post("/console/tokens", data={"csrf_token": csrf, **data})
        assert r.status_code == 400, data
        assert 'class="error"' in r.text
    r = client.post("/console/tokens/nope/revoke", data={"csrf_token": csrf})
    assert r.status_code == 404
    r = client.post("/console/tokens/" + "a" * 64 + "/revoke", data={"csrf_token": csrf})
    assert r.status_code == 404


def test_audit_filters_by_actor_action_outcome_and_time(
    client: TestClient, tenant: CreatedTenant, make_token: Callable[..., str]
) -> None:
    csrf = sign_in(client, tenant.admin_token)
    client.post("/console/tokens", data={"csrf_token": csrf, "name": "t1", "role": "reader"})
    client.post("/console/signout", data={})  # a CSRF refusal: denied
    page = client.get("/console/audit?action=token.")
    assert page.status_code == 200
    assert "token.create" in page.text
    assert "console.signin" not in page.text.split('id="audit"')[1]
    denied = client.get("/console/audit?outcome=denied").text.split('id="audit"')[1]
    assert "console.csrf_refused" in denied
    assert "token.create" not in denied
    admin_id = tenant.admin_token.split("_")[1]
    assert "token.create" in client.get(f"/console/audit?actor=token:{admin_id}").text
    assert "no matching events" in client.get("/console/audit?actor=token:nobody").text
    assert "no matching events" in client.get("/console/audit?since=2999-01-01").text
    assert "token.create" in client.get("/console/audit?until=2999-01-01T00:00").text
    bad = client.get("/console/audit?since=yesterday&outcome=maybe&action=%25")
    assert bad.status_code == 200
    assert "ignored" in bad.text
    assert "no matching events" in bad.text  # '%' is a literal, not a wildcard


def test_audit_outcome_filter_finds_refused_writes(client: TestClient, tenant: CreatedTenant) -> None:
    """Red team: a refused product or group delete is audited with outcome ``refused``; the page's outcome
    filter must offer it (it offered ``failed``, which nothing writes, and ignored ``refused``)."""
    auth = bearer(tenant.admin_token)
    assert client.post("/api/v1/products", json={"name": "widget"}, headers=auth).status_code == 201
    made = client.post("/api/v1/device-groups", json={"product": "widget", "name": "Lab"}, headers=auth)
    assert made.status_code == 201, made.text
    assert client.delete("/api/v1/products/widget", headers=auth).status_code == 409
    sign_in(client, tenant.admin_token)
    page = client.get("/console/audit?outcome=refused")
    assert page.status_code == 200
    assert "ignored" not in page.text
    rows = page.text.split('id="audit"')[1]
    assert "product.delete" in rows
    assert "console.signin" not in rows
    assert 'value="refused"' in page.text


def test_reader_sees_no_write_controls_and_is_refused_anyway(
    client: TestClient,
    tenant: CreatedTenant,
    make_token: Callable[..., str],
    add_device: Callable[..., str],
    session_factory: sessionmaker[Session],
) -> None:
    device = add_device(tenant)
    csrf = sign_in(client, make_token(tenant, "reader"))
    page = client.get(f"/console/devices/{device}")
    assert page.status_code == 200
    assert "/revoke" not in page.text
    assert "/unclaim" not in page.text
    assert 'id="device-actions"' not in page.text
    assert client.get("/console/tokens").status_code == 403  # admin page
    assert client.get("/console/audit").status_code == 403
    # A reader POSTing directly, with its own valid CSRF token: refused, recorded, nothing changed.
    r = client.post(f"/console/devices/{device}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 403
    assert "contributor" in r.text
    assert r.headers["content-security-policy"] == CSP
    with session_factory() as s:
        row = s.get(Device, device)
        assert row is not None
        assert row.revoked_at is None
    assert ("console.insufficient_role", "denied") in [
        (e.action, e.outcome) for e in _audit(session_factory, tenant.tenant_id)
    ]


def test_device_list_filters_and_pages_on_the_server(
    client: TestClient, tenant: CreatedTenant, add_device: Callable[..., str]
) -> None:
    gid = _group(client, tenant.admin_token, "cam", "beta")
    ids = [add_device(tenant, os_version="1.0.0") for _ in range(5)]
    failed = add_device(tenant, os_version="2.0.0", result="failed", last_reason="bad_signature")
    never = add_device(tenant, result=None)
    grouped = add_device(tenant, group_id=gid)
    sign_in(client, tenant.admin_token)
    page = client.get("/console/devices?limit=3")
    assert page.status_code == 200
    assert page.text.count("/console/devices/") == 3
    assert 'rel="next"' in page.text
    all_ids = sorted([*ids, failed, never, grouped])
    second = client.get("/console/devices?offset=3&limit=3").text
    assert all(d in second for d in all_ids[3:6])
    assert failed in client.get("/console/devices?standing=failed").text
    assert ids[0] not in client.get("/console/devices?standing=failed").text
    assert never in client.get("/console/devices?standing=never").text
    assert failed in client.get("/console/devices?os=2.0.0").text
    by_group = client.get(f"/console/devices?group={gid}").text
    assert grouped in by_group
    assert ids[0] not in by_group.split('id="devices"')[1]
    prefix = client.get(f"/console/devices?id={failed[:10].upper()}").text
    assert failed in prefix
    odd = client.get("/console/devices?id=zz%25&standing=weird&offset=-1")
    assert odd.status_code == 200
    assert "ignored" in odd.text


def _xss_group(session_factory: sessionmaker[Session], tenant: CreatedTenant, now: dt.datetime) -> str:
    """A product and group named <script>: the API refuses such names, so they go straight into the database
    (as a name from an older release or another writer would) to show the console escapes what it reads."""
    with session_factory() as s:
        s.add(Product(id=str(uuid.uuid4()), tenant_id=tenant.tenant_id, name=XSS, description=XSS, created_at=now))
        s.flush()
        pid = s.scalars(select(Product.id).where(Product.tenant_id == tenant.tenant_id)).one()
        gid = str(uuid.uuid4())
        s.add(
            DeviceGroup(
                id=gid,
                tenant_id=tenant.tenant_id,
                product_id=pid,
                name=XSS,
                update_policy="UpdateAll",
                os_feed="retail",
                created_at=now,
                updated_at=now,
            )
        )
        s.commit()
    return gid


def test_device_page_and_actions_are_audited_with_the_sessions_token(
    client: TestClient,
    tenant: CreatedTenant,
    add_device: Callable[..., str],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    gid = _xss_group(session_factory, tenant, clock())
    device = add_device(tenant)
    csrf = sign_in(client, tenant.admin_token)
    page = client.get(f"/console/devices/{device}")
    assert page.status_code == 200
    for section in ("Identity", "Certificate", "Attestation history", "Installed images", "Update history"):
        assert section in page.text
    assert "Error reports" in page.text
    assert "Security events" in page.text
    assert XSS not in page.text  # the group's name is text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;/&lt;script&gt;" in page.text
    r = client.post(f"/console/devices/{device}/group", data={"csrf_token": csrf, "group": gid}, follow_redirects=False)
    assert r.status_code == 303
    r = client.post(f"/console/devices/{device}/revoke", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    shown = client.get(r.headers["location"]).text
    assert "device revoked" in shown
    assert "device.revoke" in shown  # the security events of the device
    admin = f"token:{tenant.admin_token.split('_')[1]}"
    actions = {(e.action, e.actor) for e in _audit(session_factory, tenant.tenant_id)}
    assert ("device.revoke", admin) in actions
    r = client.post(f"/console/devices/{device}/unclaim", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    with session_factory() as s:
        assert s.get(Device, device) is None
    assert client.get(f"/console/devices/{device}").status_code == 404


def test_another_tenants_device_is_not_found_and_its_actions_refused(
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    add_device: Callable[..., str],
    session_factory: sessionmaker[Session],
) -> None:
    other = make_tenant("other")
    theirs = add_device(other)
    csrf = sign_in(client, tenant.admin_token)
    assert client.get(f"/console/devices/{theirs}").status_code == 404
    assert client.post(f"/console/devices/{theirs}/revoke", data={"csrf_token": csrf}).status_code == 404
    assert theirs not in client.get("/console/devices").text
    with session_factory() as s:
        row = s.get(Device, theirs)
        assert row is not None
        assert row.revoked_at is None
    assert client.get("/console/devices/not-a-device-id").status_code == 400


def test_session_fixation_a_planted_cookie_is_never_adopted(
    client: TestClient, tenant: CreatedTenant, make_token: Callable[..., str]
) -> None:
    # The attacker signs in with their own token and plants that cookie in the victim's browser...
    attacker = TestClient(client.app)
    sign_in(attacker, make_token(tenant, "reader"))
    planted = attacker.cookies.get(COOKIE_NAME, path="/console")
    client.cookies.set(COOKIE_NAME, planted or "", domain="testserver.local", path="/console")
    # ...the victim signs in: a fresh id is minted and the planted session is ended.
    sign_in(client, tenant.admin_token)
    fresh = client.cookies.get(COOKIE_NAME, path="/console")
    assert fresh != planted
    assert attacker.get("/console/", follow_redirects=False).status_code == 303
    # A made-up id the attacker invents is no session at all.
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, "A" * 43, path="/console")
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_csrf_token_of_another_session_is_refused(
    client: TestClient, tenant: CreatedTenant, make_token: Callable[..., str], session_factory: sessionmaker[Session]
) -> None:
    other = TestClient(client.app)
    other_csrf = sign_in(other, make_token(tenant, "admin"))
    sign_in(client, tenant.admin_token)
    r = client.post("/console/tokens", data={"csrf_token": other_csrf, "name": "x", "role": "admin"})
    assert r.status_code == 403
    with session_factory() as s:
        assert s.scalar(select(ApiToken).where(ApiToken.name == "x")) is None


def test_a_cookie_of_one_tenant_reads_only_that_tenant(
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    add_device: Callable[..., str],
) -> None:
    other = make_tenant("other")
    mine, theirs = add_device(tenant), add_device(other)
    sign_in(client, other.admin_token)
    listing = client.get("/console/devices").text
    assert theirs in listing
    assert mine not in listing
    assert "other" in listing  # the header names the session's tenant


def test_method_override_and_get_never_write(
    client: TestClient, tenant: CreatedTenant, add_device: Callable[..., str], session_factory: sessionmaker[Session]
) -> None:
    device = add_device(tenant)
    csrf = sign_in(client, tenant.admin_token)
    assert client.get(f"/console/devices/{device}/revoke").status_code == 405
    r = client.post(
        f"/console/devices/{device}",
        data={"csrf_token": csrf, "_method": "DELETE"},
        headers={"X-HTTP-Method-Override": "DELETE"},
    )
    assert r.status_code == 405
    r = client.request("DELETE", f"/console/devices/{device}", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 405
    with session_factory() as s:
        row = s.get(Device, device)
        assert row is not None
        assert row.revoked_at is None


def test_cross_site_post_is_refused_even_with_the_right_token(
    client: TestClient, tenant: CreatedTenant, add_device: Callable[..., str], session_factory: sessionmaker[Session]
) -> None:
    device = add_device(tenant)
    csrf = sign_in(client, tenant.admin_token)
    r = client.post(
        f"/console/devices/{device}/revoke", data={"csrf_token": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert r.status_code == 403
    with session_factory() as s:
        row = s.get(Device, device)
        assert row is not None
        assert row.revoked_at is None


def test_open_redirect_in_next_is_refused(client: TestClient, tenant: CreatedTenant) -> None:
    form = client.get("/console/signin?next=https://evil.example/")
    assert "evil.example" not in form.text
    r = client.post(
        "/console/signin",
        data={"token": tenant.admin_token, "csrf_token": csrf_from(form.text), "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/console/"
