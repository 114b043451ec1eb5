"""The staged-rollout CLI against a real service: deployment create --stages, show (table, --json), resume, abort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleet_world import image_bytes
from test_fleet_cli import logged_in, run, run_json

from bastion.cli.output import CliError
from bastion.cli.rollout_cmds import parse_soak, parse_stages
from bastion.crypto.keys import generate_private_key, private_key_pem, public_key_pem

__all__ = ["logged_in"]


def test_durations_and_stages_parse() -> None:
    assert parse_soak("30m") == 1800
    assert parse_soak("90") == 90
    assert parse_soak("2h") == 7200
    assert parse_stages("1,10,50,100") == [1.0, 10.0, 50.0, 100.0]
    with pytest.raises(CliError):
        parse_soak("soon")
    with pytest.raises(CliError):
        parse_stages("1,ten")


@pytest.mark.usefixtures("logged_in")
def test_staged_deployment_show_resume_abort(tmp_path: Path) -> None:
    key = generate_private_key()
    public = tmp_path / "release.pub.pem"
    public.write_bytes(public_key_pem(key.public_key()))
    (tmp_path / "release.pem").write_bytes(private_key_pem(key))
    run("keys", "register", str(public))
    run("product", "create", "Lamp")
    ids = []
    for version in ("1.0.0", "2.0.0"):
        path = tmp_path / f"app-{version}.img"
        path.write_bytes(image_bytes(key, version=version))
        added = run_json("image", "add", str(path))
        assert isinstance(added, dict)
        ids.append(str(added["id"]))
    run("deployment", "create", "--group", "Lamp/Production", "--image", ids[0])
    created = run_json(
        "deployment", "create", "--group", "Lamp/Production", "--image", ids[1],
        "--stages", "10,50,100", "--soak", "30m", "--halt-crash-drop", "2", "--no-halt-new-bucket",
        "--halt-install-failures", "3", "--min-sample", "5",
    )  # fmt: skip
    assert isinstance(created, dict)
    rollout = created["rollout"]
    assert rollout["state"] == "running"
    assert rollout["soak_seconds"] == 1800
    assert rollout["halt"] == {"crash_drop_points": 2.0, "new_bucket": False, "install_failures": 3, "min_sample": 5}
    assert rollout["previous"][0]["version"] == "1.0.0"
    table = run("deployment", "show", str(created["id"]))
    assert "stages (installed/devices in stage)" in table
    assert "10%" in table
    with pytest.raises(CliError) as refused:
        run("deployment", "resume", str(created["id"]))
    assert "only a halted rollout resumes" in refused.value.message
    aborted = json.loads(run("deployment", "abort", str(created["id"]), "--json"))
    assert aborted["rollout"]["state"] == "aborted"
    shown = run_json("rollout", "show", str(rollout["id"]))
    assert isinstance(shown, dict)
    assert [h["event"] for h in shown["history"]] == ["created", "aborted"]
    with pytest.raises(CliError) as bad:
        run("deployment", "create", "--group", "Lamp/Production", "--image", ids[1], "--stages", "10,50")
    assert "last stage must be 100" in bad.value.message
