"""``bastion tenant download-crl`` and ``bastion tenant ca rotate|list|certificates`` against a live service.

The service runs on the real clock (the CLI checks a downloaded CRL is current
against it), SQLite only; the login is written directly (its own tests cover
``bastion login``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
from attest_world import World
from click.testing import Result
from cryptography import x509
from sqlalchemy.orm import Session, sessionmaker
from test_ca_crl import attest
from typer.testing import CliRunner

from bastion.cli._client import OperatorConfig, save_config
from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.crypto.crl import load_crl, load_crl_bundle
from bastion.service.config import Settings
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer


@pytest.fixture
def db_url(tmp_path: Path, _sqlite_template: Path) -> str:
    path = tmp_path / "service.db"
    path.write_bytes(_sqlite_template.read_bytes())
    return f"sqlite:///{path}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


@pytest.fixture
def login(
    tmp_path: Path, settings: Settings, live_url: str, tenant: CreatedTenant, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "200")
    _register()
    save_config(OperatorConfig(url=live_url, token=tenant.admin_token))
    return live_url


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_download_crl_rotate_list_and_certificates(login: str, world: World, tmp_path: Path) -> None:
    token = world.tenant.admin_token
    chip = world.device()
    with httpx.Client(base_url=login) as http:
        attest(http, chip)  # type: ignore[arg-type]
        out = tmp_path / "crl.pem"
        done = invoke("tenant", "download-crl", "-o", str(out))
        assert "1 CRL(s) with 0 revoked certificate(s)" in done.stderr
        [crl] = load_crl_bundle(out.read_bytes())
        assert len(list(crl)) == 0

        assert http.post(f"/api/v1/devices/{chip.device_id}/revoke", headers=bearer(token)).status_code == 200
        der = tmp_path / "crl.der"
        invoke("tenant", "download-crl", "--der", "-o", str(der))
        assert len(list(load_crl(der.read_bytes()))) == 1
        assert invoke("tenant", "download-crl").stdout.startswith("-----BEGIN X509 CRL-----")

        rotated = json.loads(invoke("tenant", "ca", "rotate", "--overlap-hours", "24", "--json").stdout)
        assert rotated["successor"]["state"] == "signing"
        assert rotated["retiring"]["state"] == "retiring"
        table = invoke("tenant", "ca", "rotate", "--overlap-hours", "24")
        assert "retires at" in table.stderr
        assert "bastion tenant download-ca" in table.stderr

        listed = json.loads(invoke("tenant", "ca", "list", "--json").stdout)
        assert [r["state"] for r in listed] == ["signing", "retiring", "retiring"]
        cut = invoke("tenant", "ca", "list", "--limit", "1")
        assert "show them with --offset 1" in cut.stderr
        assert "signing" in cut.stdout
        whole = invoke("tenant", "ca", "list", "--limit", "3")
        assert "--offset" not in whole.stderr

        bundle = tmp_path / "bundle.pem"
        invoke("tenant", "download-ca", "-o", str(bundle))
        assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 3
        assert len(load_crl_bundle(invoke("tenant", "download-crl").stdout.encode())) == 3

        certs = json.loads(invoke("tenant", "ca", "certificates", "--device", chip.device_id, "--json").stdout)
        assert [c["revocation_reason"] for c in certs] == ["privilege_withdrawn"]

    with pytest.raises(CliError) as info:
        invoke("tenant", "download-crl", "--der", "--ca-id", "99999")
    assert "bastion tenant ca list" in info.value.message
    with pytest.raises(CliError) as info:
        invoke("tenant", "ca", "rotate")
    assert "too_many_cas" in info.value.message
