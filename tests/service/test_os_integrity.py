"""Integrity at upload (issue 7, section 5) and OS revocation (section 2).

Each damaged-upload attack is refused with a 4xx naming the problem, leaves
nothing stored, and is an audited denial. A revoked OS leaves every feed and
the next attestation of a device running it fails with ``os_revoked``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from attest_world import World
from fastapi import FastAPI
from fleet_world import (
    APP_COMPONENT,
    OCTET,
    OS_COMPONENT,
    FakePublisher,
    Fleet,
    image_bytes,
    os_image,
    private_pem,
    public_pem,
    trust_os_key,
)
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from test_attest_service import Harness
from typer.testing import CliRunner

from bastion.cli._client import OperatorConfig, save_config
from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.crypto.cose import sign1
from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.package import FORMAT_VERSION, MAGIC, ImageType, inspect_image, key_id
from bastion.service.attestation.errors import FailureCode
from bastion.service.auth.service import Principal
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.errors import InvalidRequest
from bastion.service.models import AuditEvent, OsImage, OsPublisherKey
from bastion.service.osimages.service import revoke_os_image
from bastion.service.tenants.service import CreatedTenant
from bastion.service.vendors.os_keys import list_os_publishers, trust_os_publisher
from conftest import T0, FakeClock, TestClient, bearer

_PREFIX = struct.Struct(">8sHI")


def forged_with_signer_of(trusted: PrivateKey, attacker: PrivateKey, *, image_type: ImageType = ImageType.OS) -> bytes:
    """A package whose header names ``trusted``'s key id but is signed by ``attacker``."""
    genuine = image_bytes(trusted, image_type=image_type, component_id=OS_COMPONENT, version="6.6.6")
    stream = io.BytesIO(genuine)
    header = inspect_image(stream)
    payload = stream.read()
    signed = sign1(header.to_cbor(), attacker)
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(signed)) + signed + payload


def flip_signature(data: bytes) -> bytes:
    """Flip a bit in the last byte of the COSE_Sign1 (its signature), leaving the structure intact."""
    header_length = _PREFIX.unpack(data[: _PREFIX.size])[2]
    end = _PREFIX.size + header_length
    damaged = bytearray(data)
    damaged[end - 1] ^= 0x01
    return bytes(damaged)


def flip_payload(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[-10] ^= 0x01
    return bytes(damaged)


def _denials(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with sessions() as session:
        query = select(AuditEvent).where(AuditEvent.action == action, AuditEvent.outcome == "denied")
        return list(session.scalars(query.order_by(AuditEvent.id)))


@pytest.fixture
def publisher(app: FastAPI) -> FakePublisher:
    fake = FakePublisher()
    app.state.tuf_publisher = fake
    return fake


@pytest.fixture
def fleet(
    client: TestClient, tenant: CreatedTenant, publisher: FakePublisher, session_factory: sessionmaker[Session]
) -> Fleet:
    return Fleet(client, tenant.admin_token, session_factory)


# --- the OS-publisher trust store ------------------------------------------------------


def test_trust_os_publisher_takes_public_keys_only(session_factory: sessionmaker[Session]) -> None:
    key = generate_private_key()
    with session_factory() as session:
        with pytest.raises(InvalidRequest) as refused:
            trust_os_publisher(session, private_pem(key).encode(), name="oops", now=T0)
        assert refused.value.code == "private_key_refused"
        assert "BEGIN" not in refused.value.detail
        with pytest.raises(InvalidRequest) as junk:
            trust_os_publisher(session, b"-----BEGIN PUBLIC KEY-----\nAAAA\n", name="junk", now=T0)
        assert junk.value.code == "invalid_key"
        with pytest.raises(InvalidRequest, match="larger than"):
            trust_os_publisher(session, b"x" * 9000, name="big", now=T0)
        assert session.scalars(select(OsPublisherKey)).all() == []
        first = trust_os_publisher(session, public_pem(key).encode(), name="Acme OS", now=T0)
        again = trust_os_publisher(session, public_pem(key).encode(), name="again", now=T0)
        assert (first.added, again.added) == (True, False)
        assert first.key.key_id == key_id(key.public_key()).hex()
        assert [k.name for k in list_os_publishers(session)] == ["Acme OS"]
        trusted = session.scalars(select(AuditEvent).where(AuditEvent.action == "os_publisher.trust")).one()
        assert trusted.tenant_id is None


# --- damaged OS uploads ----------------------------------------------------------------


def _os_attacks(trusted: PrivateKey) -> dict[str, tuple[bytes, str, str]]:
    """name -> (upload, error code, a phrase of the detail)."""
    good = os_image(trusted, "2.0.0")
    return {
        "unknown publisher": (os_image(generate_private_key(), "2.0.0"), "unknown_os_publisher", "trust-os-publisher"),
        "wrong key": (forged_with_signer_of(trusted, generate_private_key()), "bad_image_signature", "does not verify"),
        "bad signature": (flip_signature(good), "bad_image_signature", "does not verify"),
        "payload digest mismatch": (flip_payload(good), "damaged_image", "digest"),
        "truncated": (good[:-100], "damaged_image", "truncated"),
        "extra data": (good + b"tail", "damaged_image", "extra data"),
        "not an image": (b"BSTNIMG\x00\x00\x01garbage", "invalid_image", "not a Bastion image package"),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "unknown publisher",
        "wrong key",
        "bad signature",
        "payload digest mismatch",
        "truncated",
        "extra data",
        "not an image",
    ],
)
def test_damaged_os_upload_is_refused_recorded_and_not_stored(
    attack: str, fleet: Fleet, session_factory: sessionmaker[Session], settings: Settings, publisher: FakePublisher
) -> None:
    trusted = trust_os_key(session_factory, generate_private_key())
    data, code, phrase = _os_attacks(trusted)[attack]
    r = fleet.call("POST", "/os-images", content=data, headers=OCTET)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code
    assert phrase in r.json()["detail"]
    assert "BEGIN" not in r.text
    denied = _denials(session_factory, "os_image.publish")
    assert len(denied) == 1
    assert denied[0].target == f"os_image:{hashlib.sha256(data).hexdigest()}"
    assert fleet.call("GET", "/os-images").json() == []
    assert not BlobStore(settings.home / "blobs").exists(hashlib.sha256(data).hexdigest())
    assert all(not [t for t in targets if t.path.startswith("os/")] for targets in publisher.published.values())


def test_genuine_os_upload_records_its_signer(fleet: Fleet, session_factory: sessionmaker[Session]) -> None:
    trusted = trust_os_key(session_factory, generate_private_key())
    image = fleet.os(trusted, "2.0.0")
    assert image["signer_key_id"] == key_id(trusted.public_key()).hex()
    assert image["revoked_at"] is None


# --- damaged app uploads ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "code"),
    [
        ("unknown publisher", "unknown_signer"),
        ("wrong key", "invalid_image"),
        ("bad signature", "invalid_image"),
        ("payload digest mismatch", "invalid_image"),
        ("truncated", "invalid_image"),
    ],
)
def test_damaged_app_upload_is_refused_and_recorded(
    attack: str, code: str, fleet: Fleet, session_factory: sessionmaker[Session]
) -> None:
    good = image_bytes(fleet.key)
    data = {
        "unknown publisher": image_bytes(generate_private_key()),
        "wrong key": forged_with_signer_of(fleet.key, generate_private_key(), image_type=ImageType.APP),
        "bad signature": flip_signature(good),
        "payload digest mismatch": flip_payload(good),
        "truncated": good[:-50],
    }[attack]
    r = fleet.call("POST", "/app-images", content=data, headers=OCTET)
    assert (r.status_code, r.json()["error"]) == (400, code), r.text
    denied = _denials(session_factory, "app_image.add")
    assert [d.target for d in denied] == [f"app_image:{hashlib.sha256(data).hexdigest()}"]
    assert fleet.call("GET", "/app-images").json() == []
    assert fleet.app("1.0.0", APP_COMPONENT)["version"] == "1.0.0"  # the genuine one still goes in


# --- OS revocation ---------------------------------------------------------------------


def test_revoked_os_leaves_every_feed_and_is_audited(
    fleet: Fleet, publisher: FakePublisher, session_factory: sessionmaker[Session]
) -> None:
    key = generate_private_key()
    fleet.os(key, "1.0.0")
    bad = fleet.os(key, "1.1.0")
    production = fleet.groups["Production"]
    evaluation = fleet.groups["Production OS Evaluation"]
    newer, older = f"os/{OS_COMPONENT}/1.1.0.img", f"os/{OS_COMPONENT}/1.0.0.img"
    assert newer in publisher.paths(production)
    r = fleet.call("POST", "/os-images/1.1.0/revoke")
    assert r.status_code == 200, r.text
    revoked = r.json()["revoked"]
    assert [i["measurement"] for i in revoked] == [bad["measurement"]]
    assert revoked[0]["revoked_at"] is not None
    assert revoked[0]["revoked_by"]
    for group in (production, evaluation):
        assert [p for p in publisher.paths(group) if p.startswith("os")] == [older]
    listed = {i["version"]: i["revoked_at"] for i in fleet.call("GET", "/os-images").json()}
    assert listed["1.0.0"] is None
    assert listed["1.1.0"] is not None
    with session_factory() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "os_image.revoke")).one()
        assert event.target == f"os_image:{bad['measurement']}"
    again = fleet.call("POST", f"/os-images/{bad['measurement']}/revoke")
    assert (again.status_code, again.json()["error"]) == (409, "already_revoked")
    missing = fleet.call("POST", "/os-images/9.9.9/revoke")
    assert missing.status_code == 404
    assert "bastion os list" in missing.json()["detail"]
    # A promotion cannot bring a revoked image back.
    assert fleet.call("POST", "/os-feeds/retail/images", json={"image": "1.1.0"}).status_code == 404


def test_revocation_is_per_tenant_and_needs_contributor(
    fleet: Fleet, client: TestClient, make_tenant: Callable[[str], CreatedTenant], publisher: FakePublisher
) -> None:
    image = fleet.os(generate_private_key(), "1.0.0")
    rival = make_tenant("rival")
    r = client.post(f"/api/v1/os-images/{image['measurement']}/revoke", headers=bearer(rival.admin_token))
    assert r.status_code == 404  # indistinguishable from an image that does not exist
    reader = fleet.call("POST", "/tokens", json={"name": "r", "role": "reader"}).json()["token"]
    r = client.post("/api/v1/os-images/1.0.0/revoke", headers=bearer(reader))
    assert r.status_code == 403
    assert fleet.call("GET", "/os-images").json()[0]["revoked_at"] is None
    too_long = fleet.call("POST", "/os-images/" + "1" * 101 + "/revoke")
    assert 400 <= too_long.status_code < 500


def test_list_pages_with_offset(fleet: Fleet) -> None:
    key = generate_private_key()
    for minor in range(3):
        fleet.os(key, f"1.{minor}.0")
    first = fleet.call("GET", "/os-images", params={"limit": 2}).json()
    rest = fleet.call("GET", "/os-images", params={"limit": 2, "offset": 2}).json()
    assert [i["version"] for i in first + rest] == ["1.2.0", "1.1.0", "1.0.0"]
    assert fleet.call("GET", "/os-images", params={"offset": 2**63}).status_code == 422


def test_a_device_running_a_revoked_os_fails_its_next_attestation(
    world: World, engine: Engine, master_key: bytes, settings: Settings, tenant: CreatedTenant
) -> None:
    """Through the real revoke path, with the good standing warm in the attestation cache."""
    harness = Harness(world, engine, master_key)
    chip = world.device()
    harness.attest(chip.eat(harness.challenge(chip)))
    with world.sessions() as session:
        version = session.scalars(select(OsImage.version).where(OsImage.measurement == chip.os_measurement)).one()
        who = Principal(tenant_id=tenant.tenant_id, tenant_name="acme", token_id="test", role="admin")
        revoke_os_image(session, who, version, settings=settings, now=world.now, publisher=FakePublisher())
    failure = harness.refused(chip.eat(harness.challenge(chip)), FailureCode.OS_REVOKED)
    assert "revoked" in str(failure)
    last = world.records(chip.device_id)[-1]
    assert (last.result, last.reason, last.cert_serial) == ("failed", "os_revoked", None)


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


# --- CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the CLI at the test database, master key and an isolated login config."""
    config = tmp_path / "operator" / "config.json"
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    monkeypatch.setenv("COLUMNS", "200")
    _register()
    return config


def run(*args: str) -> str:
    """Run a CLI command in-process; return stdout, or raise the CliError it failed with."""
    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=True)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_cli_trust_publish_list_revoke(cli_env: Path, live_url: str, tmp_path: Path, tenant: CreatedTenant) -> None:
    save_config(OperatorConfig(url=live_url, token=tenant.admin_token))
    key = generate_private_key()
    private = tmp_path / "os-signing.key"
    private.write_text(private_pem(key))
    with pytest.raises(CliError, match="private key") as refused:
        run("service", "trust-os-publisher", str(private))
    assert "BEGIN" not in str(refused.value)
    pub = tmp_path / "os-signing.pub.pem"
    pub.write_text(public_pem(key))
    assert '"added": true' in run("service", "trust-os-publisher", str(pub), "--name", "Acme OS", "--json")
    assert "Acme OS" in run("service", "os-publishers")
    stranger = tmp_path / "stranger.img"
    stranger.write_bytes(os_image(generate_private_key(), "0.1.0"))
    with pytest.raises(CliError, match="unknown_os_publisher") as unknown:
        run("os", "publish", str(stranger))
    assert "bastion service trust-os-publisher" in unknown.value.message
    for minor in range(3):
        image = tmp_path / f"os-1.{minor}.0.img"
        image.write_bytes(os_image(key, f"1.{minor}.0"))
        run("os", "publish", str(image))
    listed = run("os", "list", "--limit", "2")
    assert "1.2.0" in listed
    assert "1.0.0" not in listed
    assert "--offset 2" in listed
    assert "1.0.0" in run("os", "list", "--offset", "2")
    assert len(json.loads(run("os", "list", "--json"))) == 3
    revoked = json.loads(run("os", "revoke", "1.2.0", "--json"))
    assert [i["version"] for i in revoked] == ["1.2.0"]
    with pytest.raises(CliError, match="already_revoked"):
        run("os", "revoke", "1.2.0")
