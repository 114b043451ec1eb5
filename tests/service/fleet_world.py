"""Shared helpers of the fleet tests: images, keys, an in-memory TUF publisher, signed status reports.

:class:`FakePublisher` implements :class:`bastion.service.fleet.targets.Publisher`
in memory, so tests can read the exact targets a group was given; one test
module (``test_fleet_tuf.py``) runs the real :mod:`bastion.service.tuf`.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography import x509
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.certs import certificate_der, issue_device_cert
from bastion.crypto.cose import sign1
from bastion.crypto.keys import PrivateKey, generate_private_key, private_key_pem, public_key_pem
from bastion.images.package import ImageType, build_image
from bastion.service.ca.service import load_signing_ca
from bastion.service.config import Settings
from bastion.service.models import Device
from bastion.service.tuf import TargetSpec
from bastion.service.vendors.os_keys import trust_os_publisher
from conftest import TestClient, bearer

APP_COMPONENT = str(uuid.UUID(int=0xA11))
APP2_COMPONENT = str(uuid.UUID(int=0xA12))
OS_COMPONENT = str(uuid.UUID(int=0x05))


def image_bytes(
    key: PrivateKey,
    *,
    image_type: ImageType = ImageType.APP,
    component_id: str = APP_COMPONENT,
    version: str = "1.0.0",
    security_version: int = 1,
    payload: bytes | None = None,
) -> bytes:
    """A signed image package."""
    out = io.BytesIO()
    build_image(
        out,
        io.BytesIO(payload if payload is not None else f"{component_id} {version}".encode() * 40),
        image_type=image_type,
        component_id=component_id,
        version=version,
        security_version=security_version,
        key=key,
    )
    return out.getvalue()


def os_image(key: PrivateKey, version: str, *, security_version: int = 1) -> bytes:
    """A signed OS image package (payload varies with the version, like real consecutive builds)."""
    payload = b"bastion runtime " * 500 + version.encode() * 20
    return image_bytes(
        key,
        image_type=ImageType.OS,
        component_id=OS_COMPONENT,
        version=version,
        security_version=security_version,
        payload=payload,
    )


def trust_os_key(sessions: sessionmaker[Session], key: PrivateKey) -> PrivateKey:
    """Trust ``key`` service-wide as an OS-publisher key (idempotent); return it."""
    with sessions() as session:
        trust_os_publisher(session, public_pem(key).encode(), name="test OS publisher", now=dt.datetime.now(dt.UTC))
    return key


def public_pem(key: PrivateKey) -> str:
    return public_key_pem(key.public_key()).decode()


def private_pem(key: PrivateKey) -> str:
    return private_key_pem(key).decode()


@dataclass
class FakePublisher:
    """An in-memory TUF publisher: remembers the last target set of each group."""

    published: dict[str, list[TargetSpec]] = field(default_factory=dict)
    customs: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0

    def publish_group(
        self,
        settings: Settings,
        group_id: str,
        targets: Sequence[TargetSpec],
        *,
        now: dt.datetime,
        custom: Mapping[str, Any] | None = None,
    ) -> None:
        self.calls += 1
        self.published[group_id] = list(targets)
        self.customs[group_id] = dict(custom or {})

    def group_root(self, settings: Settings, group_id: str) -> bytes:
        return f'{{"fake-root": "{group_id}"}}'.encode()

    def paths(self, group_id: str) -> list[str]:
        """The target paths last published for a group, sorted."""
        return sorted(t.path for t in self.published.get(group_id, []))


@dataclass
class StatusDevice:
    """A claimed device with a tenant-issued certificate that signs status reports."""

    device_id: str
    key: PrivateKey
    cert: x509.Certificate

    def report(
        self,
        *,
        iat: dt.datetime,
        os_version: str = "1.0.0",
        installed: Sequence[tuple[str, str]] = (),
        events: Sequence[dict[str, object]] = (),
        device_id: str | None = None,
        key: PrivateKey | None = None,
    ) -> bytes:
        payload = {
            "device_id": device_id or self.device_id,
            "iat": int(iat.timestamp()),
            "os_version": os_version,
            "boot_slot": "A",
            "group_id": None,
            "installed": [{"component_id": c, "version": v} for c, v in installed],
            "events": list(events),
        }
        return sign1(cbor2.dumps(payload), key or self.key, x5chain=[certificate_der(self.cert)])


def new_device_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def make_status_device(
    sessions: sessionmaker[Session],
    *,
    owner_tenant: str,
    issuing_tenant: str | None = None,
    cert_tenant: str | None = None,
    master_key: bytes,
    now: dt.datetime,
    claimed: bool = True,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
) -> StatusDevice:
    """A device claimed by ``owner_tenant``, certified by ``issuing_tenant``'s CA (default: the owner)."""
    device_id = new_device_id()
    key = generate_private_key()
    with sessions() as session:
        if claimed:
            session.add(Device(device_id=device_id, tenant_id=owner_tenant, claimed_at=now, claimed_by="test"))
            session.commit()
        ca_key, ca_cert = load_signing_ca(session, issuing_tenant or owner_tenant, master_key)
    cert = issue_device_cert(
        ca_key,
        ca_cert,
        key.public_key(),
        tenant_id=cert_tenant or issuing_tenant or owner_tenant,
        device_id=device_id,
        now=now,
        lifetime=lifetime,
    )
    return StatusDevice(device_id=device_id, key=key, cert=cert)


def event(at: dt.datetime, kind: str, component_id: str = "", version: str = "", detail: str = "") -> dict[str, object]:
    return {"at": int(at.timestamp()), "kind": kind, "component_id": component_id, "version": version, "detail": detail}


OCTET = {"Content-Type": "application/octet-stream"}


class Fleet:
    """One tenant's product, an app key, and helpers over the HTTP API."""

    def __init__(self, client: TestClient, token: str, sessions: sessionmaker[Session] | None = None) -> None:
        self.client, self.token, self.sessions = client, token, sessions
        self.key = generate_private_key()
        self.call("POST", "/app-signing-keys", json={"name": "release", "public_key_pem": public_pem(self.key)})
        product = self.call("POST", "/products", json={"name": "Lamp"}).json()
        self.groups = {g["name"]: g["id"] for g in product["groups"]}

    def call(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.request(method, "/api/v1" + path, headers=bearer(self.token) | (headers or {}), **kw)

    def app(self, version: str, component: str = APP_COMPONENT) -> dict[str, Any]:
        r = self.call(
            "POST", "/app-images", content=image_bytes(self.key, component_id=component, version=version), headers=OCTET
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    def os(self, key: PrivateKey, version: str, feed: str = "retail") -> dict[str, Any]:
        """Publish an OS image signed by ``key`` (trusted first as an OS-publisher key, with ``sessions``)."""
        if self.sessions is not None:
            trust_os_key(self.sessions, key)
        r = self.call("POST", "/os-images", params={"feed": feed}, content=os_image(key, version), headers=OCTET)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def deploy(self, group: str, *images: str) -> Any:
        return self.call("POST", "/deployments", json={"group": group, "images": list(images)})
