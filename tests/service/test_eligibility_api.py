"""Update eligibility: a device that is revoked, unclaimed or failing attestation gets no image.

The device asks ``POST /api/v1/device/download-credential`` with a request
signed by its certified key; the service checks its standing in the database
and answers with a credential valid for 60 s; the TUF static server serves a
target only with one for that target's group. Every attack below fails closed
with a named error and leaves an audit record (docs/adr/0013-update-eligibility.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import cbor2
import pytest
from fleet_world import APP_COMPONENT, Fleet, StatusDevice, make_status_device
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.crypto.keys import generate_private_key
from bastion.service.app import create_app
from bastion.service.config import Settings
from bastion.service.eligibility import CREDENTIAL_SCHEME
from bastion.service.models import AuditEvent, Device, DeviceCertificate
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient

CREDENTIAL_URL = "/api/v1/device/download-credential"
COSE = {"Content-Type": "application/cose"}


@dataclass
class World:
    client: TestClient
    fleet: Fleet
    device: StatusDevice
    group: str
    target_url: str
    sessions: sessionmaker[Session]
    clock: FakeClock
    tenant_id: str

    def request(self, *, device_id: str | None = None, iat: dt.datetime | None = None, **extra: object) -> bytes:
        payload = {
            "purpose": "download-credential",
            "device_id": device_id or self.device.device_id,
            "iat": int((iat or self.clock()).timestamp()),
            **extra,
        }
        return sign1(cbor2.dumps(payload), self.device.key, x5chain=[certificate_der(self.device.cert)])

    def credential(self, body: bytes | None = None) -> tuple[int, dict[str, object]]:
        r = self.client.post(CREDENTIAL_URL, content=body if body is not None else self.request(), headers=COSE)
        return r.status_code, r.json()

    def download(self, token: str, url: str | None = None) -> tuple[int, str]:
        r = self.client.get(url or self.target_url, headers={"Authorization": f"{CREDENTIAL_SCHEME} {token}"})
        return r.status_code, (r.json()["error"] if r.status_code != 200 else "ok")

    def denials(self, action: str) -> list[AuditEvent]:
        with self.sessions() as session:
            query = select(AuditEvent).where(AuditEvent.action == action, AuditEvent.outcome == "denied")
            return list(session.scalars(query.order_by(AuditEvent.id)).all())

    def set_device(self, **values: object) -> None:
        with self.sessions() as session:
            session.execute(update(Device).where(Device.device_id == self.device.device_id).values(**values))
            session.commit()


@pytest.fixture
def world(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> World:
    """A claimed device that attested fine, in the Production group, which has app 1.0.0 deployed."""
    fleet = Fleet(client, tenant.admin_token)
    group = fleet.groups["Production"]
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    assert fleet.call("POST", f"/devices/{device.device_id}/group", json={"group": group}).status_code == 200
    with session_factory() as session:
        session.execute(
            update(Device).where(Device.device_id == device.device_id).values(last_result="ok", last_reason="ok")
        )
        session.commit()
    image = fleet.app("1.0.0")
    assert fleet.deploy(group, str(image["id"])).status_code == 201
    url = f"/tuf/{group}/targets/apps/{APP_COMPONENT}/{image['sha256']}.1.0.0.img"
    return World(client, fleet, device, group, url, session_factory, clock, tenant.tenant_id)


def test_a_device_in_good_standing_downloads_with_its_credential(world: World) -> None:
    status, answer = world.credential()
    assert status == 200, answer
    assert answer["device_id"] == world.device.device_id
    assert answer["group_id"] == world.group
    assert answer["expires_in_s"] == 60
    assert dt.datetime.fromisoformat(str(answer["expires_at"])) == world.clock() + dt.timedelta(seconds=60)
    assert world.download(str(answer["credential"])) == (200, "ok")
    # Metadata stays public: no credential needed for a check-in.
    assert world.client.get(f"/tuf/{world.group}/metadata/timestamp.json").status_code == 200


def test_without_a_credential_a_target_is_refused_and_recorded(world: World) -> None:
    r = world.client.get(world.target_url)
    assert r.status_code == 401
    assert r.json()["error"] == "download_credential_required"
    assert "Bastion-Download" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bastion-Download"
    assert r.headers["cache-control"] == "no-store"
    (event,) = world.denials("device.download")
    assert event.tenant_id is None  # anonymous: service-wide, in no tenant's view
    assert event.actor == "anonymous"


def test_revoked_device_gets_no_credential(world: World) -> None:
    revoked = world.fleet.call("POST", f"/devices/{world.device.device_id}/revoke")
    assert revoked.status_code == 200, revoked.text
    status, answer = world.credential()
    assert (status, answer["error"]) == (403, "device_revoked")
    (event,) = world.denials("device.download_credential")
    assert event.tenant_id == world.tenant_id
    assert event.actor == f"device:{world.device.device_id}"
    assert "revoked" in event.detail


def test_a_device_whose_certificate_is_on_the_crl_gets_no_credential_and_it_is_recorded(world: World) -> None:
    # The certificate is on the tenant CA's CRL (a revocation recorded it there) while the device row stays.
    now = dt.datetime.now(dt.UTC)
    with world.sessions() as session:
        session.add(
            DeviceCertificate(
                ca_id=1,
                tenant_id=world.tenant_id,
                device_id=world.device.device_id,
                serial=format(world.device.cert.serial_number, "x"),
                issued_at=now,
                not_after=now + dt.timedelta(hours=24),
                revoked_at=now,
                revocation_reason="privilege_withdrawn",
            )
        )
        session.commit()
    status, answer = world.credential()
    assert (status, answer["error"]) == (403, "certificate_revoked")
    assert "gets no updates" in str(answer["detail"])
    (event,) = world.denials("device.download_credential")
    assert event.tenant_id == world.tenant_id
    assert event.actor == f"device:{world.device.device_id}"
    assert "certificate revoked" in event.detail


def test_unclaimed_device_gets_no_credential(world: World) -> None:
    with world.sessions() as session:  # unclaimed means no devices row
        session.execute(delete(Device).where(Device.device_id == world.device.device_id))
        session.commit()
    status, answer = world.credential()
    assert (status, answer["error"]) == (403, "device_not_claimed")
    assert "bastion device claim" in str(answer["detail"])
    (event,) = world.denials("device.download_credential")
    assert event.tenant_id == world.tenant_id
    assert "not claimed" in event.detail


def test_device_failing_attestation_gets_no_credential(world: World) -> None:
    world.set_device(last_result="failed", last_reason="unknown_measurement")
    status, answer = world.credential()
    assert (status, answer["error"]) == (403, "attestation_failed")
    assert "unknown_measurement" in str(answer["detail"])
    (event,) = world.denials("device.download_credential")
    assert "unknown_measurement" in event.detail
    # Once it attests successfully again, it is eligible again.
    world.set_device(last_result="ok", last_reason="ok")
    assert world.credential()[0] == 200


def test_device_in_no_group_gets_no_credential(world: World) -> None:
    world.set_device(group_id=None)
    status, answer = world.credential()
    assert (status, answer["error"]) == (403, "no_group")
    assert "bastion device assign" in str(answer["detail"])


def test_revocation_stops_downloads_within_60_s(world: World) -> None:
    """A credential issued just before the revocation works until it expires (<= 60 s), then nothing."""
    _, answer = world.credential()
    token = str(answer["credential"])
    assert world.fleet.call("POST", f"/devices/{world.device.device_id}/revoke").status_code == 200
    world.clock.advance(dt.timedelta(seconds=59))
    assert world.download(token) == (200, "ok")
    world.clock.advance(dt.timedelta(seconds=1))
    assert world.download(token) == (401, "download_credential_expired")
    assert world.credential()[1]["error"] == "device_revoked"
    (expired,) = world.denials("device.download")
    assert expired.tenant_id == world.tenant_id  # an authentic credential: its tenant sees the refusal
    assert expired.actor == f"device:{world.device.device_id}"
    assert expired.detail.startswith("expired:")


def test_a_shorter_credential_lifetime_setting_is_what_devices_get(world: World, settings: Settings) -> None:
    """``download_credential_ttl_s`` (BASTION_DOWNLOAD_CREDENTIAL_TTL) shortens the 60 s; e2e tests use it."""
    app = create_app(replace(settings, download_credential_ttl_s=20), clock=world.clock, migrate_on_startup=False)
    with TestClient(app) as client:
        short = replace(world, client=client)
        _, answer = short.credential()
        assert answer["expires_in_s"] == 20
        assert dt.datetime.fromisoformat(str(answer["expires_at"])) == world.clock() + dt.timedelta(seconds=20)
        token = str(answer["credential"])
        world.clock.advance(dt.timedelta(seconds=19))
        assert short.download(token) == (200, "ok")
        world.clock.advance(dt.timedelta(seconds=1))
        assert short.download(token) == (401, "download_credential_expired")


def test_expired_credential_is_refused(world: World) -> None:
    _, answer = world.credential()
    world.clock.advance(dt.timedelta(seconds=61))
    assert world.download(str(answer["credential"])) == (401, "download_credential_expired")
    assert len(world.denials("device.download")) == 1


def test_stolen_credential_for_another_group_is_refused(world: World) -> None:
    _, answer = world.credential()
    other = world.fleet.groups["Development"]
    url = world.target_url.replace(world.group, other)
    assert world.download(str(answer["credential"]), url) == (403, "download_credential_wrong_group")
    (event,) = world.denials("device.download")
    assert event.target == f"group:{other}"
    assert event.detail.startswith("wrong_group:")


def test_stolen_credential_rewritten_for_another_device_is_refused(world: World) -> None:
    _, answer = world.credential()
    version, device_id, *rest = str(answer["credential"]).split(".")
    forged = ".".join([version, "cd" * 32, *rest])
    assert device_id == world.device.device_id
    assert world.download(forged) == (401, "download_credential_invalid")
    # Nor may the expiry be stretched, nor the group swapped.
    parts = str(answer["credential"]).split(".")
    assert world.download(".".join([*parts[:4], str(int(parts[4]) + 3600), parts[5]])) == (
        401,
        "download_credential_invalid",
    )
    swapped = ".".join([parts[0], parts[1], world.fleet.groups["Development"], *parts[3:]])
    url = world.target_url.replace(world.group, world.fleet.groups["Development"])
    assert world.download(swapped, url) == (401, "download_credential_invalid")
    events = world.denials("device.download")
    assert events
    assert {e.tenant_id for e in events} == {None}


def test_another_device_cannot_ask_for_a_credential_in_its_name(
    world: World, session_factory: sessionmaker[Session], master_key: bytes, tenant: CreatedTenant
) -> None:
    thief = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=world.clock())
    body = sign1(
        cbor2.dumps(
            {
                "purpose": "download-credential",
                "device_id": world.device.device_id,
                "iat": int(world.clock().timestamp()),
            }
        ),
        thief.key,
        x5chain=[certificate_der(thief.cert)],
    )
    status, answer = world.credential(body)
    assert (status, answer["error"]) == (403, "device_mismatch")
    (event,) = world.denials("device.download_credential")
    assert event.actor == f"device:{thief.device_id}"


def test_a_status_report_is_not_a_credential_request(world: World) -> None:
    report = world.device.report(iat=world.clock())  # signed by the same key, no "purpose"
    status, answer = world.credential(report)
    assert (status, answer["error"]) == (400, "malformed_request")
    assert "purpose" in str(answer["detail"])


def test_stale_request_is_refused(world: World) -> None:
    status, answer = world.credential(world.request(iat=world.clock() - dt.timedelta(minutes=6)))
    assert (status, answer["error"]) == (403, "stale_request")


def test_signature_by_another_key_is_refused(world: World) -> None:
    payload = cbor2.dumps(
        {"purpose": "download-credential", "device_id": world.device.device_id, "iat": int(world.clock().timestamp())}
    )
    body = sign1(payload, generate_private_key(), x5chain=[certificate_der(world.device.cert)])
    status, answer = world.credential(body)
    assert (status, answer["error"]) == (403, "bad_signature")


def test_bad_bodies_get_4xx(world: World) -> None:
    assert (
        world.client.post(CREDENTIAL_URL, content=b"x", headers={"Content-Type": "application/json"}).status_code == 415
    )
    r = world.client.post(CREDENTIAL_URL, content=b"\xa1\x01\x02", headers=COSE)
    assert (r.status_code, r.json()["error"]) == (400, "malformed_request")
    big = world.client.post(CREDENTIAL_URL, content=b"\0" * (9 * 1024), headers=COSE)
    assert big.status_code == 413


def test_refusals_of_one_device_are_recorded_once_per_window(world: World) -> None:
    world.set_device(revoked_at=world.clock())
    for _ in range(5):
        assert world.credential()[1]["error"] == "device_revoked"
    assert len(world.denials("device.download_credential")) == 1
    world.clock.advance(dt.timedelta(seconds=61))
    assert world.credential()[1]["error"] == "device_revoked"
    events = world.denials("device.download_credential")
    assert len(events) == 2
    assert "(4 more since the last record)" in events[1].detail
