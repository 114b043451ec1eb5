"""Operator token lifecycle over HTTP: expiry, list, revoke, and failed auth that cannot flood an audit view.

Issue 7 sections 2 ("Operator tokens") and 6 ("Failed authentication is not
written into a tenant's audit view in a way that an outsider can flood").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.auth.failures import REASONS
from bastion.service.auth.limits import AuthLimits
from bastion.service.models import AuditEvent, AuthFailure
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer


def _mint(client: TestClient, admin: str, role: str = "reader", **extra: object) -> dict[str, str]:
    r = client.post("/api/v1/tokens", json={"name": f"{role} bot", "role": role, **extra}, headers=bearer(admin))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _events(client: TestClient, admin: str) -> list[dict[str, str]]:
    r = client.get("/api/v1/audit", headers=bearer(admin))
    assert r.status_code == 200, r.text
    return list(r.json())


def test_new_tokens_expire_after_the_default_lifetime(
    client: TestClient, tenant: CreatedTenant, clock: FakeClock
) -> None:
    minted = _mint(client, tenant.admin_token)
    assert dt.datetime.fromisoformat(minted["expires_at"]) == clock() + AuthLimits().token_default_lifetime
    who = client.get("/api/v1/whoami", headers=bearer(minted["token"])).json()
    assert who["expires_at"] == minted["expires_at"]


def test_an_expired_token_is_401_naming_the_expiry_and_bastion_login(
    client: TestClient, tenant: CreatedTenant, clock: FakeClock, session_factory: sessionmaker[Session]
) -> None:
    minted = _mint(client, tenant.admin_token, expires_in_s=3600)
    assert client.get("/api/v1/whoami", headers=bearer(minted["token"])).status_code == 200
    clock.advance(dt.timedelta(seconds=3600))
    r = client.get("/api/v1/whoami", headers=bearer(minted["token"]))
    assert r.status_code == 401
    assert r.json()["error"] == "token_expired"
    expires = dt.datetime.fromisoformat(minted["expires_at"]).isoformat(timespec="seconds")
    assert expires in r.json()["detail"]
    assert "bastion login" in r.json()["detail"]
    # Recorded: counted service-wide, and once in the tenant's own audit log.
    with session_factory() as session:
        assert [(f.reason, f.count) for f in session.scalars(select(AuthFailure))] == [("token_expired", 1)]
    stale = [e for e in _events(client, tenant.admin_token) if e["action"] == "auth.stale_token"]
    assert [(e["actor"], e["outcome"]) for e in stale] == [(f"token:{minted['token_id']}", "denied")]


@pytest.mark.parametrize("expires_in_s", [0, 59, 10**12, "soon"])
def test_an_out_of_range_expiry_is_refused(client: TestClient, tenant: CreatedTenant, expires_in_s: object) -> None:
    body = {"name": "x", "role": "reader", "expires_in_s": expires_in_s}
    r = client.post("/api/v1/tokens", json=body, headers=bearer(tenant.admin_token))
    assert r.status_code == 422
    assert "expires_in_s" in r.json()["detail"]


def test_expiry_below_the_services_minimum_is_refused(client: TestClient, tenant: CreatedTenant) -> None:
    body = {"name": "x", "role": "reader", "expires_in_s": 120}
    r = client.post("/api/v1/tokens", json=body, headers=bearer(tenant.admin_token))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_expiry"


def test_the_default_lifetime_is_a_setting(
    app: FastAPI, client: TestClient, tenant: CreatedTenant, clock: FakeClock
) -> None:
    app.state.auth_limits = AuthLimits.from_env({"BASTION_TOKEN_LIFETIME_DAYS": "7"})
    minted = _mint(client, tenant.admin_token)
    assert dt.datetime.fromisoformat(minted["expires_at"]) == clock() + dt.timedelta(days=7)


def test_list_shows_state_and_never_a_secret(client: TestClient, tenant: CreatedTenant, clock: FakeClock) -> None:
    short = _mint(client, tenant.admin_token, expires_in_s=600)
    revoked = _mint(client, tenant.admin_token, "contributor")
    assert (
        client.post(f"/api/v1/tokens/{revoked['token_id']}/revoke", headers=bearer(tenant.admin_token)).status_code
        == 200
    )
    clock.advance(dt.timedelta(seconds=601))
    r = client.get("/api/v1/tokens", headers=bearer(tenant.admin_token))
    assert r.status_code == 200, r.text
    states = {t["token_id"]: t["state"] for t in r.json()}
    assert states == {tenant.admin_token_id: "active", short["token_id"]: "expired", revoked["token_id"]: "revoked"}
    assert "secret" not in r.text
    assert short["token"][len("bst_") + 33 :] not in r.text
    page = client.get("/api/v1/tokens", params={"limit": 1, "offset": 1}, headers=bearer(tenant.admin_token)).json()
    assert page == r.json()[1:2]


def test_a_revoked_token_stops_at_once_and_the_revocation_is_audited(
    client: TestClient, tenant: CreatedTenant, clock: FakeClock
) -> None:
    bot = _mint(client, tenant.admin_token, "contributor")
    assert client.get("/api/v1/whoami", headers=bearer(bot["token"])).status_code == 200
    r = client.post(f"/api/v1/tokens/{bot['token_id']}/revoke", headers=bearer(tenant.admin_token))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "revoked"
    assert r.json()["revoked_by"] == f"token:{tenant.admin_token_id}"
    refused = client.get("/api/v1/whoami", headers=bearer(bot["token"]))
    assert refused.status_code == 401
    assert refused.json()["error"] == "token_revoked"
    assert "bastion login" in refused.json()["detail"]
    # Revoking again changes nothing.
    again = client.post(f"/api/v1/tokens/{bot['token_id']}/revoke", headers=bearer(tenant.admin_token))
    assert again.json()["revoked_at"] == r.json()["revoked_at"]
    actions = [(e["action"], e["target"]) for e in _events(client, tenant.admin_token)]
    assert actions.count(("token.revoke", f"token:{bot['token_id']}")) == 1
    assert ("auth.stale_token", "GET /api/v1/whoami") in actions


def test_revoke_needs_admin_and_cannot_reach_another_tenants_token(
    client: TestClient, make_tenant: Callable[[str], CreatedTenant]
) -> None:
    a, b = make_tenant("a-corp"), make_tenant("b-corp")
    reader = _mint(client, a.admin_token)
    assert (
        client.post(f"/api/v1/tokens/{reader['token_id']}/revoke", headers=bearer(reader["token"])).status_code == 403
    )
    other = client.post(f"/api/v1/tokens/{a.admin_token_id}/revoke", headers=bearer(b.admin_token))
    missing = client.post(f"/api/v1/tokens/{'0' * 32}/revoke", headers=bearer(b.admin_token))
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(a.admin_token_id, "0" * 32) == missing.json()["detail"]
    assert client.get("/api/v1/whoami", headers=bearer(a.admin_token)).status_code == 200
    assert all(
        t["token_id"] != a.admin_token_id for t in client.get("/api/v1/tokens", headers=bearer(b.admin_token)).json()
    )


def test_the_last_usable_admin_token_cannot_be_revoked(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.post(f"/api/v1/tokens/{tenant.admin_token_id}/revoke", headers=bearer(tenant.admin_token))
    assert r.status_code == 409
    assert r.json()["error"] == "last_admin_token"
    assert "bastion token create --role admin" in r.json()["detail"]
    second = _mint(client, tenant.admin_token, "admin")
    r = client.post(f"/api/v1/tokens/{tenant.admin_token_id}/revoke", headers=bearer(second["token"]))
    assert r.status_code == 200


def test_an_outsider_cannot_flood_a_tenants_audit_view(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    """Audit flooding: thousands of forged tokens naming the tenant's public token id."""
    client.post("/api/v1/tokens", json={"name": "real", "role": "reader"}, headers=bearer(tenant.admin_token))
    before = _events(client, tenant.admin_token)
    forged = bearer(f"bst_{tenant.admin_token_id}_" + "A" * 43)
    garbage = {"Authorization": "Bearer bst_x"}
    for i in range(300):
        client.get("/api/v1/devices", headers=forged if i % 2 else garbage)
        if i % 100 == 99:
            clock.advance(dt.timedelta(minutes=5))
    after = _events(client, tenant.admin_token)
    assert after == before  # the real events are all still there, and nothing was added
    with session_factory() as session:
        rows = session.scalars(select(AuthFailure)).all()
        total_events = session.scalar(select(func.count()).select_from(AuditEvent))
    assert sum(r.count for r in rows) == 300
    assert len(rows) <= 3 * len(REASONS)  # one row per window and reason, not one per request
    assert total_events == len(before)


def test_old_windows_are_pruned(client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock) -> None:
    limits = AuthLimits()
    client.get("/api/v1/whoami")
    clock.advance(limits.auth_failure_keep + limits.auth_failure_window)
    client.get("/api/v1/whoami")
    with session_factory() as session:
        rows = session.scalars(select(AuthFailure)).all()
    assert [(r.count, r.window_start <= clock()) for r in rows] == [(1, True)]
