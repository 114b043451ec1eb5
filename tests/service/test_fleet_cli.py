"""The fleet and update CLI against a real service (uvicorn on loopback, the real TUF slice)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from claim_proof import add_device_row
from fleet_world import image_bytes, new_device_id, os_image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.crypto.keys import generate_private_key, private_key_pem, public_key_pem
from bastion.service.config import Settings
from bastion.service.models import Tenant


@pytest.fixture
def logged_in(tmp_path: Path, settings: Settings, live_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "operator" / "config.json"))
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    token = json.loads(run("tenant", "create", "acme", "--json"))["token"]
    run("login", "--url", live_url, stdin=token)


def run(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(cli_app, list(args), input=stdin, catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def run_json(*args: str) -> object:
    return json.loads(run(*args, "--json"))


@pytest.mark.usefixtures("logged_in")
def test_fleet_cli_end_to_end(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    key = generate_private_key()
    private, public = tmp_path / "release.pem", tmp_path / "release.pub.pem"
    private.write_bytes(private_key_pem(key))
    public.write_bytes(public_key_pem(key.public_key()))
    with pytest.raises(CliError) as refused:
        run("keys", "register", str(private))
    assert "private key" in refused.value.message
    assert ".pub.pem" in str(refused.value.hint)
    registered = run_json("keys", "register", str(public))
    assert isinstance(registered, dict)
    assert registered["name"] == "release"
    assert "release" in run("keys", "list")

    product = run_json("product", "create", "Lamp", "--description", "desk lamp")
    assert isinstance(product, dict)
    assert len(product["groups"]) == 5
    table = run("product", "show", "Lamp")
    assert "Field Test OS Evaluation" in table
    assert "retail-eval" in table
    group = run_json(
        "device-group",
        "create",
        "--product",
        "Lamp",
        "--name",
        "Night",
        "--policy",
        "NoUpdates",
        "--window-start",
        "01:00",
        "--window-minutes",
        "30",
    )
    assert isinstance(group, dict)
    assert group["maintenance_window"] == {"start": "01:00", "duration_minutes": 30}
    assert "01:00 UTC +30m" in run("device-group", "show", "Lamp/Night")
    updated = run_json("device-group", "update", "Lamp/Night", "--no-window", "--feed", "retail-eval")
    assert isinstance(updated, dict)
    assert (updated["maintenance_window"], updated["os_feed"]) == (None, "retail-eval")
    with pytest.raises(CliError) as bad_policy:
        run("device-group", "update", "Lamp/Night", "--policy", "Often")
    assert "invalid_policy" in bad_policy.value.message
    groups = run_json("device-group", "list", "--product", "Lamp")
    assert isinstance(groups, list)
    assert len(groups) == 6

    app_file = tmp_path / "app.img"
    app_file.write_bytes(image_bytes(key, version="1.0.0"))
    image = run_json("image", "add", str(app_file))
    assert isinstance(image, dict)
    assert image["sha256"] in run("image", "list")
    stranger = tmp_path / "stranger.img"
    stranger.write_bytes(image_bytes(generate_private_key(), version="1.0.1"))
    with pytest.raises(CliError) as unknown:
        run("image", "add", str(stranger))
    assert "bastion keys register" in unknown.value.message
    deployment = run_json("deployment", "create", "--group", "Lamp/Field Test", "--image", image["sha256"])
    assert isinstance(deployment, dict)
    assert deployment["counts"]["pending"] == 0
    shown = run("deployment", "show", str(deployment["id"]))
    assert "devices per state" in shown
    assert "rolled_back" in shown
    assert str(deployment["id"]) in run("deployment", "list", "--group", "Lamp/Field Test")

    os_key = generate_private_key()
    os_pub = tmp_path / "os-signing.pub.pem"
    os_pub.write_bytes(public_key_pem(os_key.public_key()))
    run("service", "trust-os-publisher", str(os_pub), "--name", "Lamp OS")
    for version, feed in (("1.0.0", "retail"), ("1.1.0", "retail-eval")):
        path = tmp_path / f"os-{version}.img"
        path.write_bytes(os_image(os_key, version))
        published = run_json("os", "publish", str(path), "--feed", feed)
        assert isinstance(published, dict)
        assert published["feed"] == feed
    promoted = run_json("os", "promote", "1.1.0", "--to", "retail")
    assert isinstance(promoted, dict)
    assert promoted["promoted_at"]
    # Issue 9 §7: promote shows the feed it changed (both versions are on retail now).
    assert [i["version"] for i in promoted["feed_images"]] == ["1.1.0", "1.0.0"]
    path = tmp_path / "os-1.2.0.img"
    path.write_bytes(os_image(os_key, "1.2.0"))
    run("os", "publish", str(path), "--feed", "retail-eval")
    shown = run("os", "promote", "1.2.0")
    assert "OS 1.2.0 promoted to retail" in shown
    feed_table = shown[shown.index("feed retail now") :]
    assert all(v in feed_table for v in ("1.2.0", "1.1.0", "1.0.0"))
    with pytest.raises(CliError) as twice:
        run("os", "promote", "1.2.0")
    assert "already_on_feed" in twice.value.message

    device = new_device_id()
    with session_factory() as session:  # claimed (the claim flow has its own tests)
        tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == "acme")).one()
    add_device_row(session_factory, tenant_id, device)
    assigned = run_json("device", "assign", device, "--group", "Lamp/Production")
    assert isinstance(assigned, dict)
    assert assigned["group_id"]
    assert "update history" in run("device", "show", device)
    status = run_json("device", "show-deployment-status", device)
    assert status == {"device_id": device, "group_id": assigned["group_id"], "status": None, "history": []}
    with pytest.raises(CliError) as missing:
        run("device", "assign", device, "--group", "Lamp/Nope")
    assert "HTTP 404" in missing.value.message
    assert run_json("device", "assign", device, "--group", "none") is not None
