"""The operator and local-admin CLI against a real service on a loopback port."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import stat
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.crypto.certs import make_ca
from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.images.package import ImageType, build_image
from bastion.service.config import Settings
from conftest import FakeClock

DEVICE = "c0ffee" * 10 + "c0ff"


@pytest.fixture
def cli_env(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the CLI at the test database, master key and an isolated login config; return the config path."""
    config = tmp_path / "operator" / "config.json"
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    monkeypatch.setenv("COLUMNS", "200")
    _register()
    return config


def run(*args: str, stdin: str | None = None) -> str:
    """Run a CLI command in-process (``stdin`` piped in); return stdout, or raise the CliError it failed with."""
    result = CliRunner().invoke(cli_app, list(args), input=stdin, catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def _new_tenant(name: str = "acme") -> dict[str, str]:
    return dict(json.loads(run("tenant", "create", name, "--json")))


def test_login_writes_0600_config_and_never_prints_the_token(cli_env: Path, live_url: str) -> None:
    tenant = _new_tenant()
    result = CliRunner().invoke(cli_app, ["login", "--url", live_url], input=tenant["token"] + "\n")
    assert result.exit_code == 0, result.output
    assert tenant["token"] not in result.output
    assert "acme" in result.stdout
    assert stat.S_IMODE(cli_env.stat().st_mode) == 0o600
    saved = json.loads(cli_env.read_text())["profiles"]["default"]  # the first login is profile "default"
    assert saved["url"] == live_url
    assert saved["token"] == tenant["token"]


def test_login_honours_xdg_config_home(
    cli_env: Path, live_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = _new_tenant()
    monkeypatch.delenv("BASTION_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    run("login", "--url", live_url, stdin=tenant["token"])
    path = tmp_path / "xdg" / "bastion" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(run("device", "list", "--json")) == []


def test_login_with_a_bad_token_fails_and_saves_nothing(cli_env: Path, live_url: str) -> None:
    with pytest.raises(CliError) as failure:
        run("login", "--url", live_url, stdin="bst_" + "0" * 32 + "_" + "A" * 43)
    assert "HTTP 401" in failure.value.message
    assert "A" * 43 not in failure.value.message
    assert failure.value.hint is not None
    assert "bastion login" in failure.value.hint
    assert not cli_env.exists()


def test_commands_without_login_say_what_to_do(cli_env: Path) -> None:
    with pytest.raises(CliError) as failure:
        run("device", "list")
    assert failure.value.message == "you are not logged in"
    assert "bastion login" in str(failure.value.hint)


def test_unreachable_service(cli_env: Path) -> None:
    run("tenant", "create", "acme")  # works locally without a service
    cli_env.parent.mkdir(parents=True)
    cli_env.write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "bst_x"}))
    with pytest.raises(CliError, match="cannot reach the service"):
        run("device", "list")


def test_operator_flow(cli_env: Path, live_url: str, tmp_path: Path, clock: FakeClock) -> None:
    clock.now = dt.datetime.now(dt.UTC)  # the vendor signs the voucher with the real clock
    tenant = _new_tenant()
    run("login", "--url", live_url, stdin=tenant["token"])

    # Bulk claim: the vendor signs a voucher for the tenant (the service trusts the vendor CA).
    vendor_dir = tmp_path / "vendor"
    run("vendor", "init", "--dir", str(vendor_dir))
    run("service", "trust-vendor", str(vendor_dir / "ca.pem"))
    voucher = tmp_path / "voucher.cbor"
    signed = json.loads(
        run("vendor", "voucher", "--dir", str(vendor_dir), "--tenant", tenant["tenant_id"],
            "--device", DEVICE, "-o", str(voucher), "--json")
    )  # fmt: skip
    assert signed["devices"] == 1
    claimed = json.loads(run("device", "claim", "--voucher", str(voucher), "--json"))
    assert [d["device_id"] for d in claimed["claimed"]] == [DEVICE]
    again = json.loads(run("device", "claim", "--voucher", str(voucher), "--json"))
    assert [(r["device_id"], r["error"]) for r in again["refused"]] == [(DEVICE, "already_claimed")]
    assert "already claimed" in again["refused"][0]["detail"]
    with pytest.raises(CliError, match="a claim needs proof") as bare:
        run("device", "claim", DEVICE)
    assert "bastion device claim --dir DEV" in str(bare.value.hint)
    with pytest.raises(CliError, match="64 lowercase hex"):
        run("vendor", "voucher", "--dir", str(vendor_dir), "--tenant", tenant["tenant_id"], "--device", "xyz",
            "-o", str(tmp_path / "bad.cbor"))  # fmt: skip
    assert [d["device_id"] for d in json.loads(run("device", "list", "--json"))] == [DEVICE]
    assert DEVICE in run("device", "list")
    shown = json.loads(run("device", "show", DEVICE, "--json"))
    assert shown["attestations"] == []
    assert "recent attestations" in run("device", "show", DEVICE)
    assert json.loads(run("device", "revoke", DEVICE, "--json"))["revoked_at"] is not None

    ca_file = tmp_path / "tenant-ca.pem"
    run("tenant", "download-ca", "-o", str(ca_file))
    cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == tenant["tenant_id"]

    reader = json.loads(run("token", "create", "--role", "reader", "--name", "ci", "--json"))
    assert reader["role"] == "reader"
    assert reader["token"].startswith("bst_")

    image = tmp_path / "os.img"
    os_key = generate_private_key()
    os_pub = tmp_path / "os-signing.pub.pem"
    os_pub.write_bytes(public_key_pem(os_key.public_key()))
    run("service", "trust-os-publisher", str(os_pub))
    with image.open("wb") as out:
        build_image(
            out,
            io.BytesIO(b"payload" * 1000),
            image_type=ImageType.OS,
            component_id=str(uuid.uuid4()),
            version="2.0.0",
            security_version=1,
            key=os_key,
        )
    published = json.loads(run("os", "publish", str(image), "--json"))
    assert published["version"] == "2.0.0"
    with pytest.raises(CliError, match="already published"):
        run("os", "publish", str(image))

    actions = [e["action"] for e in json.loads(run("audit", "--json"))]
    assert actions[:5] == ["os_image.publish", "os_image.publish", "token.create", "device.revoke", "device.claim"]

    # A reader cannot claim: the CLI shows the service's reason and a hint.
    run("login", "--url", live_url, stdin=reader["token"])
    with pytest.raises(CliError) as failure:
        run("device", "claim", "--voucher", str(voucher))
    assert "contributor" in failure.value.message
    assert "HTTP 403" in failure.value.message


def test_trust_vendor_and_vendors(cli_env: Path, tmp_path: Path, clock: FakeClock) -> None:
    cert = make_ca("Test Silicon Root", generate_private_key(), now=clock())
    pem = tmp_path / "vendor.pem"
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    first = json.loads(run("service", "trust-vendor", str(pem), "--name", "Test Silicon", "--json"))
    assert first["added"] is True
    again = json.loads(run("service", "trust-vendor", str(pem), "--json"))
    assert again == first | {"added": False}
    vendors = json.loads(run("service", "vendors", "--json"))
    assert [(v["name"], v["fingerprint"]) for v in vendors] == [("Test Silicon", first["fingerprint"])]

    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(CliError, match="not a PEM certificate"):
        run("service", "trust-vendor", str(tmp_path / "junk.pem"))


def test_tenant_create_twice_is_refused(cli_env: Path) -> None:
    _new_tenant("dup")
    with pytest.raises(CliError, match="already exists"):
        run("tenant", "create", "dup")
    with pytest.raises(CliError, match="tenant name"):
        run("tenant", "create", "bad name!")
