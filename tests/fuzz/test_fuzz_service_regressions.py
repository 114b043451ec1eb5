"""Fuzz findings seen from the API: inputs that were a 500 are now a 4xx ``{error, detail}``."""

from __future__ import annotations

from pathlib import Path

from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient, bearer

REGRESSIONS = Path(__file__).resolve().parents[2] / "fuzz" / "regressions"


def test_app_signing_key_of_an_unknown_curve_is_a_400(client: TestClient, tenant: CreatedTenant) -> None:
    pem = (REGRESSIONS / "keys" / "public-pem-unknown-curve").read_text(encoding="ascii", errors="replace")
    r = client.post(
        "/api/v1/app-signing-keys",
        json={"name": "odd-curve", "public_key_pem": pem},
        headers=bearer(tenant.admin_token),
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_key"
    assert "P-256" in r.json()["detail"]
