"""CLI: keys create, app validate, app package (run through the `bastion` entry point)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from _cli_support import run

from bastion.crypto.keys import load_private_key_pem, load_public_key_pem
from bastion.images.package import key_id, verify_image

HELLO = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hello"


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_keys_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    code, out, err = run(monkeypatch, capsys, "keys", "create", "-o", str(keys), "--name", "tenant", "--json")
    assert code == 0, err
    result = json.loads(out)
    private, public = keys / "tenant.key", keys / "tenant.pub.pem"
    assert result["private_key"] == str(private)
    assert result["public_key"] == str(public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    signing = load_private_key_pem(private.read_bytes())
    pub = load_public_key_pem(public.read_bytes())
    assert pub.public_numbers() == signing.public_key().public_numbers()
    assert result["key_id"] == key_id(pub).hex()
    assert "PRIVATE" not in out

    before = private.read_bytes()
    code, out, err = run(monkeypatch, capsys, "keys", "create", "-o", str(keys), "--name", "tenant")
    assert code == 1
    assert "refusing to overwrite" in err
    assert private.read_bytes() == before
    public.unlink()  # even half a pair is never overwritten
    code, _, err = run(monkeypatch, capsys, "keys", "create", "-o", str(keys), "--name", "tenant")
    assert code == 1
    assert private.read_bytes() == before
    assert sorted(p.name for p in keys.iterdir()) == ["tenant.key"]

    code, _, err = run(monkeypatch, capsys, "keys", "create", "-o", str(keys), "--name", "../evil")
    assert code == 1
    assert "invalid key name" in err


def test_keys_create_default_dir_follows_the_config_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without -o the key pair lands in $XDG_CONFIG_HOME/bastion/keys: never in $HOME when XDG_CONFIG_HOME says so."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    code, out, err = run(monkeypatch, capsys, "keys", "create", "--name", "x", "--json")
    assert code == 0, err
    assert json.loads(out)["public_key"] == str(tmp_path / "xdg" / "bastion" / "keys" / "x.pub.pem")
    assert (tmp_path / "xdg" / "bastion" / "keys" / "x.key").is_file()

    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "op" / "config.json"))  # the login file only
    code, out, err = run(monkeypatch, capsys, "keys", "create", "--name", "y", "--json")
    assert code == 0, err
    assert json.loads(out)["private_key"] == str(tmp_path / "xdg" / "bastion" / "keys" / "y.key")

    monkeypatch.delenv("BASTION_CONFIG")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    code, out, err = run(monkeypatch, capsys, "keys", "create", "--name", "z", "--json")
    assert code == 0, err
    assert json.loads(out)["private_key"] == str(home / ".config" / "bastion" / "keys" / "z.key")
    # Nothing but the last (no variable set) went under $HOME.
    assert sorted(p.name for p in (home / ".config" / "bastion" / "keys").iterdir()) == ["z.key", "z.pub.pem"]


def test_app_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(monkeypatch, capsys, "app", "validate", str(HELLO))
    assert code == 0, err
    assert "app manifest is valid" in out
    assert "5b1e2f0a-7c3d-4e8b-9a61-2f4c8d0e1a37" in out
    code, out, _ = run(monkeypatch, capsys, "app", "validate", str(HELLO), "--json")
    assert json.loads(out)["valid"] is True

    bad = tmp_path / "bad"
    shutil.copytree(HELLO, bad)
    value = json.loads((bad / "app_manifest.json").read_text())
    value["Capabilities"] = {"AllowedTcpServerPorts": [80, 70000], "Gpoi": [1], "MutableStorage": {"SizeKB": 0}}
    value["EntryPoint"] = "../main.py"
    (bad / "app_manifest.json").write_text(json.dumps(value))
    code, out, err = run(monkeypatch, capsys, "app", "validate", str(bad))
    assert code == 1
    for line in (
        "$.EntryPoint:",
        "$.Capabilities.Gpoi: unknown key",
        "$.Capabilities.AllowedTcpServerPorts[1]: 70000 is not a port (1..65535)",
        "$.Capabilities.MutableStorage.SizeKB:",
    ):
        assert line in err
    assert "has 4 errors" in err
    code, out, _ = run(monkeypatch, capsys, "app", "validate", str(bad), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["valid"] is False
    assert [e["path"] for e in report["errors"]][-1] == "$.Capabilities.MutableStorage.SizeKB"

    code, _, err = run(monkeypatch, capsys, "app", "validate", str(tmp_path / "missing"))
    assert code == 1
    assert "cannot read" in err


def test_app_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert run(monkeypatch, capsys, "keys", "create", "-o", str(keys))[0] == 0
    image = tmp_path / "hello.img"
    code, out, err = run(
        monkeypatch, capsys, "app", "package", str(HELLO), "--key", str(keys / "app-signing.key"),
        "-o", str(image), "--version", "1.4.0", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert "validating" in err  # progress on stderr, JSON alone on stdout
    result = json.loads(out)
    assert result["component_id"] == "5b1e2f0a-7c3d-4e8b-9a61-2f4c8d0e1a37"
    assert result["version"] == "1.4.0"
    assert result["name"] == "hello"
    public = load_public_key_pem((keys / "app-signing.pub.pem").read_bytes())
    with image.open("rb") as stream:
        header = verify_image(stream, [public])
    assert header.version == "1.4.0"
    assert result["signer"] == key_id(public).hex()
    assert len(result["measurement"]) == 64

    bad = tmp_path / "bad"
    shutil.copytree(HELLO, bad)
    (bad / "app_manifest.json").write_text('{"SchemaVersion": 1, "Name": "x", "Name": "y"}')
    code, _, err = run(
        monkeypatch,
        capsys,
        "app",
        "package",
        str(bad),
        "--key",
        str(keys / "app-signing.key"),
        "-o",
        str(tmp_path / "b.img"),
    )
    assert code == 1
    assert "$.Name: duplicate key" in err
    assert "$: ComponentId is required" in err
    assert not (tmp_path / "b.img").exists()

    code, _, err = run(
        monkeypatch,
        capsys,
        "app",
        "package",
        str(HELLO),
        "--key",
        str(tmp_path / "none.key"),
        "-o",
        str(tmp_path / "c.img"),
    )
    assert code == 1
    assert "keys create" in err
    code, _, err = run(
        monkeypatch, capsys, "app", "package", str(HELLO), "--key", str(keys / "app-signing.pub.pem"),
        "-o", str(tmp_path / "c.img"),
    )  # fmt: skip
    assert code == 1
    assert "not a P-256 private key" in err
    code, _, err = run(
        monkeypatch, capsys, "app", "package", str(HELLO), "--key", str(keys / "app-signing.key"),
        "-o", str(tmp_path / "c.img"), "--version", "v1",
    )  # fmt: skip
    assert code == 1
    assert "semantic version" in err
