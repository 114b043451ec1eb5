"""Smoke: the app starts on a migrated database and answers health and whoami."""

from __future__ import annotations

from bastion.service.auth.limits import AuthLimits
from bastion.service.tenants.service import CreatedTenant
from conftest import T0, TestClient, bearer


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_whoami(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.get("/api/v1/whoami", headers=bearer(tenant.admin_token))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "tenant_id": tenant.tenant_id,
        "tenant_name": "acme",
        "token_id": tenant.admin_token_id,
        "role": "admin",
        "expires_at": (T0 + AuthLimits().token_default_lifetime).isoformat().replace("+00:00", "Z"),
    }
