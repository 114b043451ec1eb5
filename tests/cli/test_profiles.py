"""``bastion --version``, ``logout`` and named profiles (``--profile``, ``BASTION_PROFILE``, ``profile ...``)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from _opcli_support import cli_env, invoke, run

import bastion
from bastion.cli.output import CliError
from bastion.service.config import Settings
from bastion.service.tenants.service import CreatedTenant


def test_version_prints_the_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"bastion {bastion.__version__}"


@pytest.fixture
def two_tenants(
    tmp_path: Path,
    settings: Settings,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
    make_tenant: Callable[[str], CreatedTenant],
) -> tuple[Path, CreatedTenant, CreatedTenant]:
    config = cli_env(monkeypatch, tmp_path, settings)
    acme, globex = make_tenant("acme"), make_tenant("globex")
    run("login", "--url", live_url, "--token-stdin", stdin=acme.admin_token + "\n")
    run("login", "--profile", "globex", "--url", live_url, "--token-stdin", stdin=globex.admin_token + "\n")
    return config, acme, globex


def _token_ids(*args: str) -> set[str]:
    return {t["token_id"] for t in json.loads(run(*args, "token", "list", "--json"))}


def test_profiles_choose_the_login(
    two_tenants: tuple[Path, CreatedTenant, CreatedTenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, acme, globex = two_tenants
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert acme.admin_token not in run("profile", "list")
    assert globex.admin_token not in run("profile", "list")
    # The first login is current; --profile and BASTION_PROFILE pick another one.
    assert acme.admin_token_id in _token_ids()
    assert globex.admin_token_id in _token_ids("--profile", "globex")
    monkeypatch.setenv("BASTION_PROFILE", "globex")
    assert globex.admin_token_id in _token_ids()
    assert json.loads(run("profile", "show", "--json"))["chosen_by"] == "BASTION_PROFILE"
    assert acme.admin_token_id in _token_ids("--profile", "default")  # the option beats the variable
    monkeypatch.delenv("BASTION_PROFILE")
    run("profile", "use", "globex")
    assert globex.admin_token_id in _token_ids()
    shown = json.loads(run("profile", "show", "--json"))
    assert shown["name"] == "globex"
    assert shown["current"] == "*"
    assert shown["chosen_by"] == "current profile"


def test_a_missing_profile_is_named(two_tenants: tuple[Path, CreatedTenant, CreatedTenant]) -> None:
    with pytest.raises(CliError) as missing:
        run("--profile", "prod", "device", "list")
    assert "'prod'" in missing.value.message
    assert "default, globex" in missing.value.message
    assert "--profile prod" in str(missing.value.hint)
    with pytest.raises(CliError, match="not a profile name"):
        run("--profile", "../../etc", "device", "list")
    with pytest.raises(CliError, match="no profile named 'nope'"):
        run("profile", "use", "nope")


def test_logout_removes_only_that_profiles_token(two_tenants: tuple[Path, CreatedTenant, CreatedTenant]) -> None:
    config, acme, globex = two_tenants
    before = config.stat().st_ino
    assert "logged out of profile 'globex'" in run("logout", "--profile", "globex")
    after = json.loads(config.read_text())
    assert config.stat().st_ino != before  # rewritten by a rename, not in place
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert globex.admin_token not in config.read_text()
    assert after["profiles"]["globex"]["token"] is None
    assert after["profiles"]["globex"]["url"].startswith("http://127.0.0.1:")
    assert after["profiles"]["default"]["token"] == acme.admin_token
    with pytest.raises(CliError, match="profile 'globex' is logged out") as out:
        run("--profile", "globex", "device", "list")
    assert "bastion login --profile globex" in str(out.value.hint)
    assert acme.admin_token_id in _token_ids()  # the other profile still works
    assert "already logged out" in run("logout", "--profile", "globex")
    assert not [p for p in config.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_old_single_login_file_reads_as_the_default_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": "http://127.0.0.1:1", "token": "bst_old", "ca_file": None}))
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    monkeypatch.delenv("BASTION_PROFILE", raising=False)
    listed = json.loads(run("profile", "list", "--json"))
    assert listed == [
        {"current": "*", "name": "default", "url": "http://127.0.0.1:1", "logged_in": "yes", "ca_file": ""}
    ]
    run("logout")
    assert "bst_old" not in config.read_text()


def test_load_config_reads_another_operators_file(tmp_path: Path) -> None:
    """``make demo`` reads its operator's login from the stack's own config file (it broke on the profile format)."""
    from bastion.cli._client import load_config

    path = tmp_path / "op" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"current": "acme", "profiles": {"acme": {"url": "http://127.0.0.1:1", "token": "t1"}}}))
    login = load_config(path)
    assert (login.url, login.token) == ("http://127.0.0.1:1", "t1")
    path.write_text(json.dumps({"url": "http://127.0.0.1:2", "token": "t2"}))  # a file from before profiles
    assert load_config(path).token == "t2"
    path.write_text(json.dumps({"current": "acme", "profiles": {"acme": {"url": "http://x", "token": None}}}))
    with pytest.raises(CliError, match="logged out"):
        load_config(path)
