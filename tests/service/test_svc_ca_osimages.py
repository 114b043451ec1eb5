"""Tenant CA download and sealing; OS image publishing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from fleet_world import trust_os_key
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.certs import CA_LIFETIME
from bastion.crypto.keys import generate_private_key
from bastion.images.package import ImageType, build_image
from bastion.service.app import create_app
from bastion.service.ca.service import load_signing_ca
from bastion.service.config import Limits, Settings
from bastion.service.errors import SealedKeyError
from bastion.service.models import TenantCA
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

#: The OS-publisher key the images of these tests are signed with (trusted by the ``os_key`` fixture).
OS_KEY = generate_private_key()


@pytest.fixture
def os_key(session_factory: sessionmaker[Session]) -> None:
    """Trust :data:`OS_KEY` as an OS-publisher key."""
    trust_os_key(session_factory, OS_KEY)


def _image(image_type: ImageType = ImageType.OS, version: str = "1.0.0", payload: bytes = b"os payload") -> bytes:
    out = io.BytesIO()
    build_image(
        out,
        io.BytesIO(payload),
        image_type=image_type,
        component_id=str(uuid.UUID(int=7)),
        version=version,
        security_version=3,
        key=OS_KEY,
    )
    return out.getvalue()


def test_ca_download_is_pem_matching_the_sealed_key(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    r = client.get("/api/v1/ca", headers=bearer(tenant.admin_token))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-pem-file")
    cert = x509.load_pem_x509_certificate(r.content)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= CA_LIFETIME - dt.timedelta(minutes=10)
    assert cert.not_valid_before_utc <= clock()
    with session_factory() as session:
        key, loaded = load_signing_ca(session, tenant.tenant_id, master_key)
        row = session.scalars(select(TenantCA)).one()
    assert loaded == cert
    assert key.public_key() == cert.public_key()
    # Sealed at rest: the DER of the private key is not in the row.
    assert b"PRIVATE KEY" not in row.sealed_key
    assert row.sealed_key.startswith(b"BSE1")


def test_wrong_master_key_fails_closed(
    tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes
) -> None:
    wrong = bytes(b ^ 0xFF for b in master_key)
    with session_factory() as session, pytest.raises(SealedKeyError):
        load_signing_ca(session, tenant.tenant_id, wrong)


def test_sealed_key_moved_to_another_tenant_does_not_open(
    make_tenant: Callable[[str], CreatedTenant], session_factory: sessionmaker[Session], master_key: bytes
) -> None:
    a, b = make_tenant("a-corp"), make_tenant("b-corp")
    with session_factory() as session:
        sealed_a = session.scalars(select(TenantCA.sealed_key).where(TenantCA.tenant_id == a.tenant_id)).one()
        session.execute(update(TenantCA).where(TenantCA.tenant_id == b.tenant_id).values(sealed_key=sealed_a))
        session.commit()
    with session_factory() as session, pytest.raises(SealedKeyError):
        load_signing_ca(session, b.tenant_id, master_key)


@pytest.mark.usefixtures("os_key")
def test_publish_os_image(client: TestClient, tenant: CreatedTenant, clock: FakeClock) -> None:
    blob = _image(version="1.2.3")
    r = client.post(
        "/api/v1/os-images",
        content=blob,
        headers=bearer(tenant.admin_token) | {"content-type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["measurement"] == hashlib.sha256(blob).hexdigest()
    assert (body["version"], body["security_version"], body["size"]) == ("1.2.3", 3, len(blob))
    assert body["component_id"] == str(uuid.UUID(int=7))
    assert body["tenant_id"] == tenant.tenant_id
    listed = client.get("/api/v1/os-images", headers=bearer(tenant.admin_token)).json()
    assert [i["measurement"] for i in listed] == [body["measurement"]]
    audit = client.get("/api/v1/audit", headers=bearer(tenant.admin_token)).json()
    assert audit[0]["action"] == "os_image.publish"

    dup = client.post("/api/v1/os-images", content=blob, headers=bearer(tenant.admin_token))
    assert dup.status_code == 409
    assert dup.json()["error"] == "duplicate_os_image"


@pytest.mark.usefixtures("os_key")
def test_streamed_upload_without_length(client: TestClient, tenant: CreatedTenant) -> None:
    blob = _image()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(blob), 100):
            yield blob[i : i + 100]

    r = client.post("/api/v1/os-images", content=chunks(), headers=bearer(tenant.admin_token))
    assert r.status_code == 201, r.text
    assert r.json()["measurement"] == hashlib.sha256(blob).hexdigest()


@pytest.mark.parametrize("blob", [b"", b"not an image at all", b"BSTNIMG\x00\x00\x01garbage"])
def test_not_an_image_is_400(client: TestClient, tenant: CreatedTenant, blob: bytes) -> None:
    r = client.post("/api/v1/os-images", content=blob, headers=bearer(tenant.admin_token))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_image"
    assert r.json()["detail"].startswith("not a Bastion image package")


def test_app_image_is_refused(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.post("/api/v1/os-images", content=_image(ImageType.APP), headers=bearer(tenant.admin_token))
    assert r.status_code == 400
    assert "only 'os' images" in r.json()["detail"]


def test_reader_cannot_publish(client: TestClient, tenant: CreatedTenant) -> None:
    reader = client.post(
        "/api/v1/tokens", json={"name": "r", "role": "reader"}, headers=bearer(tenant.admin_token)
    ).json()["token"]
    r = client.post("/api/v1/os-images", content=_image(), headers=bearer(reader))
    assert r.status_code == 403


def test_oversized_upload_is_413(settings: Settings, clock: FakeClock, tenant: CreatedTenant) -> None:
    blob = _image(payload=b"x" * 5000)
    small = dataclasses.replace(settings, limits=Limits(max_image_upload_bytes=4096))
    with TestClient(create_app(small, clock=clock, migrate_on_startup=False)) as client:
        r = client.post("/api/v1/os-images", content=blob, headers=bearer(tenant.admin_token))
        assert r.status_code == 413
        assert r.json()["error"] == "payload_too_large"
        assert "4096 bytes" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(blob), 1000):
                yield blob[i : i + 1000]

        r = client.post("/api/v1/os-images", content=chunks(), headers=bearer(tenant.admin_token))
        assert r.status_code == 413
        assert client.get("/api/v1/os-images", headers=bearer(tenant.admin_token)).json() == []
