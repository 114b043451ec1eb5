"""The token and list commands of the CLI against a live service (issue 7 sections 2 and 7).

``bastion login`` takes the token from standard input (never argv),
``bastion token create --expires / list / revoke``, and list commands that
fetch every page or page on request and say when their output is cut.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.cli.token_cmds import parse_expiry
from bastion.service.config import Settings
from bastion.service.models import Device
from conftest import FakeClock

#: More than one page of the service (500) and of the CLI (500), and not a multiple of either.
MANY_DEVICES = 1203


@pytest.fixture
def operator(tmp_path: Path, settings: Settings, live_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A tenant whose admin is logged in (token piped on stdin); returns ``tenant create --json``."""
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    tenant: dict[str, str] = json.loads(invoke("tenant", "create", "acme", "--json").stdout)
    invoke("login", "--url", live_url, stdin=tenant["token"])
    tenant["url"] = live_url
    return tenant


def invoke(*args: str, stdin: str | None = None) -> Result:
    """Run a command in-process; raise the CliError it failed with."""
    result = CliRunner().invoke(cli_app, list(args), input=stdin, catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def as_json(*args: str) -> list[dict[str, str]]:
    return list(json.loads(invoke(*args, "--json").stdout))


def test_login_reads_the_token_from_stdin_and_never_prints_it(operator: dict[str, str], tmp_path: Path) -> None:
    result = invoke("login", "--url", operator["url"], "--token-stdin", stdin=operator["token"] + "\n")
    assert operator["token"] not in result.output
    assert (
        json.loads((tmp_path / "operator" / "config.json").read_text())["profiles"]["default"]["token"]
        == operator["token"]
    )


def test_login_with_empty_stdin_says_what_to_do(operator: dict[str, str]) -> None:
    with pytest.raises(CliError, match="no token given") as failure:
        invoke("login", "--url", operator["url"], stdin="\n")
    assert "--token-stdin" in str(failure.value.hint)


def test_token_create_with_expiry_list_and_revoke(operator: dict[str, str], clock: FakeClock) -> None:
    created = json.loads(invoke("token", "create", "--role", "reader", "--expires", "2h", "--json").stdout)
    assert dt.datetime.fromisoformat(created["expires_at"]) == clock() + dt.timedelta(hours=2)
    listed = {t["token_id"]: t for t in as_json("token", "list")}
    assert listed[created["token_id"]]["state"] == "active"
    assert created["token"] not in invoke("token", "list").stdout
    assert created["token_id"] in invoke("token", "list").stdout

    revoked = json.loads(invoke("token", "revoke", created["token_id"], "--json").stdout)
    assert revoked["state"] == "revoked"
    with pytest.raises(CliError, match="no token"):
        invoke("token", "revoke", "0" * 32)

    # The revoked token no longer logs in; the error names the revocation and `bastion login`.
    with pytest.raises(CliError, match="revoked") as failure:
        invoke("login", "--url", operator["url"], stdin=created["token"])
    assert "bastion login" in failure.value.message
    assert created["token"] not in failure.value.message


def test_an_expired_token_is_refused_naming_the_expiry(operator: dict[str, str], clock: FakeClock) -> None:
    created = json.loads(invoke("token", "create", "--role", "admin", "--expires", "10m", "--json").stdout)
    invoke("login", "--url", operator["url"], stdin=created["token"])
    clock.advance(dt.timedelta(minutes=10))
    with pytest.raises(CliError, match="expired at") as failure:
        invoke("device", "list")
    assert "token_expired, HTTP 401" in failure.value.message
    assert "bastion login" in str(failure.value.hint)


@pytest.mark.parametrize("text", ["soon", "0d", "-1h", "2001-01-01", "x" * 100])
def test_bad_expiries_are_refused_before_any_request(text: str) -> None:
    with pytest.raises(CliError):
        parse_expiry(text, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def test_expiry_as_a_date() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_expiry("2026-01-31", now) == 30 * 86400
    assert parse_expiry("2026-01-01T01:00Z", now) == 3600
    assert parse_expiry("45m", now) == 2700


def _add_devices(session_factory: sessionmaker[Session], tenant_id: str, clock: FakeClock, count: int) -> list[str]:
    ids = [f"{i:064x}" for i in range(count)]
    with session_factory() as session:
        session.add_all(
            Device(device_id=d, tenant_id=tenant_id, claimed_at=clock(), claimed_by="test:direct") for d in ids
        )
        session.commit()
    return ids


def test_device_list_fetches_every_page_of_more_than_500_devices(
    operator: dict[str, str], session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    """The issue's finding: `device list` quietly stopped at 500 devices."""
    ids = _add_devices(session_factory, operator["tenant_id"], clock, MANY_DEVICES)
    result = invoke("device", "list", "--json")
    assert sorted(d["device_id"] for d in json.loads(result.stdout)) == ids
    assert "cut" not in result.stderr

    table = invoke("device", "list")
    assert ids[-1] in table.stdout
    assert "cut" not in table.stderr


def test_device_list_pages_on_request_and_says_when_cut(
    operator: dict[str, str], session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    _add_devices(session_factory, operator["tenant_id"], clock, MANY_DEVICES)
    everything = [d["device_id"] for d in as_json("device", "list")]

    first = invoke("device", "list", "--limit", "700", "--json")
    assert [d["device_id"] for d in json.loads(first.stdout)] == everything[:700]
    assert "output cut: devices 1-700 shown" in first.stderr
    assert "--offset 700" in first.stderr

    rest = invoke("device", "list", "--limit", "700", "--offset", "700", "--json")
    assert [d["device_id"] for d in json.loads(rest.stdout)] == everything[700:]
    assert "cut" not in rest.stderr

    exact = invoke("device", "list", "--limit", "3", "--offset", str(MANY_DEVICES - 3))
    assert "cut" not in exact.stderr


def test_audit_says_when_cut(operator: dict[str, str]) -> None:
    for i in range(3):
        invoke("token", "create", "--role", "reader", "--name", f"t{i}")
    cut = invoke("audit", "--limit", "2", "--json")
    assert len(json.loads(cut.stdout)) == 2
    assert "output cut" in cut.stderr
    assert "--limit 4" in cut.stderr
    whole = invoke("audit", "--json")
    assert "cut" not in whole.stderr


def test_service_auth_failures_shows_the_counted_failures(operator: dict[str, str]) -> None:
    forged = "bst_" + operator["token_id"] + "_" + "A" * 43
    for _ in range(3):
        with pytest.raises(CliError):
            invoke("login", "--url", operator["url"], stdin=forged)
    rows = as_json("service", "auth-failures")
    assert [(r["reason"], r["count"]) for r in rows] == [("wrong_secret", 3)]
    assert "A" * 43 not in invoke("service", "auth-failures").stdout
    # The tenant's own audit view holds none of it.
    assert all(e["outcome"] != "denied" for e in as_json("audit"))
