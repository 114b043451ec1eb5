"""App-signing keys and app images: public keys only, bounded uploads, known signers, no duplicates."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fleet_world import APP_COMPONENT, FakePublisher, image_bytes, os_image, private_pem, public_pem
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.images.package import key_id
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.fleet.limits import FleetLimits
from bastion.service.models import AppSigningKey, AuditEvent
from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient, bearer

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def api(app: FastAPI, client: TestClient, tenant: CreatedTenant) -> Callable[..., Any]:
    app.state.tuf_publisher = FakePublisher()

    def call(
        method: str, path: str, *, token: str | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        return client.request(
            method, "/api/v1" + path, headers=bearer(token or tenant.admin_token) | (headers or {}), **kw
        )

    return call


def test_register_public_key_and_refuse_a_private_one(
    api: Callable[..., Any], session_factory: sessionmaker[Session]
) -> None:
    key = generate_private_key()
    refused = api("POST", "/app-signing-keys", json={"name": "oops", "public_key_pem": private_pem(key)})
    assert refused.status_code == 400
    assert refused.json()["error"] == "private_key_refused"
    assert "public half" in refused.json()["detail"]
    assert "PRIVATE" not in refused.text.replace("private key", "")  # nothing of the key is echoed
    with session_factory() as session:
        assert session.scalars(select(AppSigningKey)).all() == []
        denied = session.scalars(select(AuditEvent).where(AuditEvent.action == "app_key.register")).one()
        assert denied.outcome == "denied"
    r = api("POST", "/app-signing-keys", json={"name": "release", "public_key_pem": public_pem(key)})
    assert r.status_code == 201, r.text
    assert r.json()["key_id"] == key_id(key.public_key()).hex()
    dup = api("POST", "/app-signing-keys", json={"name": "again", "public_key_pem": public_pem(key)})
    assert (dup.status_code, dup.json()["error"]) == (409, "duplicate_key")
    bad = api(
        "POST", "/app-signing-keys", json={"name": "junk", "public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n"}
    )
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_key")
    assert [k["name"] for k in api("GET", "/app-signing-keys").json()] == ["release"]


def test_only_admins_register_keys(api: Callable[..., Any]) -> None:
    contributor = api("POST", "/tokens", json={"name": "c", "role": "contributor"}).json()["token"]
    pem = public_pem(generate_private_key())
    assert (
        api("POST", "/app-signing-keys", json={"name": "k", "public_key_pem": pem}, token=contributor).status_code
        == 403
    )


def test_image_add_verifies_stores_and_lists(api: Callable[..., Any], settings: Settings) -> None:
    key = generate_private_key()
    api("POST", "/app-signing-keys", json={"name": "release", "public_key_pem": public_pem(key)})
    data = image_bytes(key, version="1.2.0", security_version=4)
    r = api("POST", "/app-images", content=data, headers=OCTET)
    assert r.status_code == 201, r.text
    image = r.json()
    digest = hashlib.sha256(data).hexdigest()
    assert (image["sha256"], image["component_id"], image["version"]) == (digest, APP_COMPONENT, "1.2.0")
    assert (image["security_version"], image["size"]) == (4, len(data))
    assert image["signer_key_id"] == key_id(key.public_key()).hex()
    assert BlobStore(settings.home / "blobs").path(digest).read_bytes() == data
    assert [i["id"] for i in api("GET", "/app-images").json()] == [image["id"]]


def test_image_add_refuses_unknown_signers_os_images_and_damage(api: Callable[..., Any]) -> None:
    known, stranger = generate_private_key(), generate_private_key()
    api("POST", "/app-signing-keys", json={"name": "release", "public_key_pem": public_pem(known)})
    r = api("POST", "/app-images", content=image_bytes(stranger), headers=OCTET)
    assert (r.status_code, r.json()["error"]) == (400, "unknown_signer")
    assert "bastion keys register" in r.json()["detail"]
    r = api("POST", "/app-images", content=os_image(known, "1.0.0"), headers=OCTET)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_image")
    assert "bastion os publish" in r.json()["detail"]
    damaged = bytearray(image_bytes(known))
    damaged[-1] ^= 0x01
    r = api("POST", "/app-images", content=bytes(damaged), headers=OCTET)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_image")
    r = api("POST", "/app-images", content=b"not an image", headers=OCTET)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_image")
    assert api("GET", "/app-images").json() == []


def test_image_add_refuses_duplicates(api: Callable[..., Any], session_factory: sessionmaker[Session]) -> None:
    key = generate_private_key()
    api("POST", "/app-signing-keys", json={"name": "release", "public_key_pem": public_pem(key)})
    data = image_bytes(key, version="2.0.0")
    assert api("POST", "/app-images", content=data, headers=OCTET).status_code == 201
    same = api("POST", "/app-images", content=data, headers=OCTET)
    assert (same.status_code, same.json()["error"]) == (409, "duplicate_app_image")
    # Other bytes claiming the same component and version are refused too.
    rebuilt = image_bytes(key, version="2.0.0", payload=b"different payload")
    clash = api("POST", "/app-images", content=rebuilt, headers=OCTET)
    assert (clash.status_code, clash.json()["error"]) == (409, "duplicate_app_image")
    assert "higher --version" in clash.json()["detail"]
    with session_factory() as session:
        outcomes = session.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "app_image.add")).all()
    assert sorted(outcomes) == ["denied", "denied", "ok"]


def test_image_add_is_bounded(app: FastAPI, api: Callable[..., Any], settings: Settings) -> None:
    key = generate_private_key()
    api("POST", "/app-signing-keys", json={"name": "release", "public_key_pem": public_pem(key)})
    data = image_bytes(key, payload=b"x" * 5000)
    app.state.fleet_limits = FleetLimits(max_app_image_bytes=len(data) - 1)
    r = api("POST", "/app-images", content=data, headers=OCTET)
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
    assert f"{len(data) - 1} bytes" in r.json()["detail"]

    def chunked() -> Any:  # no Content-Length: the bound applies while streaming
        yield data[:3000]
        yield data[3000:]

    r = api("POST", "/app-images", content=chunked(), headers=OCTET)
    assert r.status_code == 413
    assert not (settings.home / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()[:2]).exists()
    app.state.fleet_limits = FleetLimits(max_app_image_bytes=len(data))
    assert api("POST", "/app-images", content=data, headers=OCTET).status_code == 201
