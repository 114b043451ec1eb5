"""``bastion device-group appraisal show|set|list`` against a real service (uvicorn on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli._client import OperatorConfig, save_config
from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient, bearer


@pytest.fixture
def logged_in(tmp_path: Path, live_url: str, tenant: CreatedTenant, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tenant admin's login saved as `bastion login` saves it (no token in argv)."""
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    save_config(OperatorConfig(url=live_url, token=tenant.admin_token))
    return tenant.admin_token


def run(*args: str) -> str:
    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_show_set_and_list_a_groups_appraisal_policy(logged_in: str, client: TestClient) -> None:
    for name in ("lamp", "widget"):
        created = client.post("/api/v1/products", json={"name": name}, headers=bearer(logged_in))
        assert created.status_code == 201, created.text
    shown = run("device-group", "appraisal", "show", "widget/Development")
    for rule in ("secboot", "debug", "rollback", "swversion", "sandbox"):
        assert rule in shown
    policy = json.loads(run("device-group", "appraisal", "set", "widget/Development", "--relax", "debug", "--json"))
    assert policy["relaxed"] == ["debug"]
    assert [r["rule"] for r in policy["rules"] if not r["enforced"]] == ["debug"]
    run("device-group", "appraisal", "set", "lamp/Development", "--relax", "sandbox", "--relax", "debug")
    listed = json.loads(run("device-group", "appraisal", "list", "--json"))
    assert sorted(p["relaxed"] for p in listed["items"]) == [["debug"], ["debug", "sandbox"]]
    assert listed["more"] is False
    cut = run("device-group", "appraisal", "list", "--limit", "1")
    assert "output cut at 1 groups; see more with --offset 1" in cut
    # Refusals are one line naming the problem.
    with pytest.raises(CliError) as bad:
        run("device-group", "appraisal", "set", "widget/Development", "--relax", "swversion")
    assert "cannot be relaxed" in bad.value.message
    with pytest.raises(CliError) as nothing:
        run("device-group", "appraisal", "set", "widget/Development")
    assert "--enforce-all" in str(nothing.value.hint)
    policy = json.loads(run("device-group", "appraisal", "set", "widget/Development", "--enforce-all", "--json"))
    assert policy["relaxed"] == []
