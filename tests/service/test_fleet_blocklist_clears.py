"""The service clears a device-side blocklisted OS image for a group or one device (issue 8 §6, ADR 0018).

The clear is audited and signed into the group's TUF targets ``custom``; the
device's own parser (:func:`bastion.os.updates.pointer.signed_clears`) reads it
back from the published metadata, so the clear reaches the device at its next
check-in.
"""

from __future__ import annotations

import datetime as dt

import pytest
from fleet_world import Fleet, new_device_id
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.os.updates.pointer import signed_clears
from bastion.service.config import Settings
from bastion.service.models import AuditEvent, Device, OsBlocklistClear
from bastion.service.tenants.service import CreatedTenant
from bastion.service.tuf.repository import load_state
from conftest import TestClient


@pytest.fixture
def fleet(client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]) -> Fleet:
    return Fleet(client, tenant.admin_token, session_factory)


def _custom(settings: Settings, group_id: str) -> dict[str, object]:
    value = load_state(settings, group_id).targets.signed.unrecognized_fields.get("custom")
    assert isinstance(value, dict)
    return value


def _device_in(sessions: sessionmaker[Session], tenant_id: str, group_id: str | None) -> str:
    device_id = new_device_id()
    with sessions() as session:
        session.add(
            Device(
                device_id=device_id,
                tenant_id=tenant_id,
                claimed_at=dt.datetime.now(dt.UTC),
                claimed_by="test",
                group_id=group_id,
            )
        )
        session.commit()
    return device_id


def test_a_group_clear_is_signed_into_the_group_targets_and_audited(
    fleet: Fleet, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    image = fleet.os(generate_private_key(), "1.1.0")
    group = fleet.groups["Production"]
    assert "blocklist_clears" not in _custom(settings, group)["bastion"]  # type: ignore[operator]
    r = fleet.call("POST", "/os-blocklist-clears", json={"group": group, "image": "1.1.0"})
    assert r.status_code == 201, r.text
    clear = r.json()
    assert (clear["sha256"], clear["device_id"], clear["version"]) == (image["measurement"], None, "1.1.0")
    custom = _custom(settings, group)
    applied = signed_clears(custom, "ab" * 32)  # the device's own parser, any device of the group
    assert [(c.clear_id, c.sha256) for c in applied] == [(clear["id"], image["measurement"])]
    other = fleet.groups["Development"]
    assert "blocklist_clears" not in _custom(settings, other)["bastion"]  # type: ignore[operator]
    listed = fleet.call("GET", "/os-blocklist-clears", params={"group": group}).json()
    assert [c["id"] for c in listed] == [clear["id"]]
    with session_factory() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "os_blocklist.clear")).one()
        assert image["measurement"] in audit.detail


def test_a_device_clear_reaches_only_that_device(
    fleet: Fleet, settings: Settings, session_factory: sessionmaker[Session], tenant: CreatedTenant
) -> None:
    image = fleet.os(generate_private_key(), "1.1.0")
    group = fleet.groups["Production"]
    device = _device_in(session_factory, tenant.tenant_id, group)
    r = fleet.call(
        "POST", "/os-blocklist-clears", json={"group": group, "image": image["measurement"], "device_id": device}
    )
    assert r.status_code == 201, r.text
    custom = _custom(settings, group)
    assert [c.sha256 for c in signed_clears(custom, device)] == [image["measurement"]]
    assert signed_clears(custom, "cd" * 32) == []


def test_bad_clears_are_refused_and_change_nothing(
    fleet: Fleet, settings: Settings, session_factory: sessionmaker[Session], tenant: CreatedTenant
) -> None:
    fleet.os(generate_private_key(), "1.1.0")
    group = fleet.groups["Production"]
    elsewhere = _device_in(session_factory, tenant.tenant_id, fleet.groups["Development"])
    cases = [
        ({"group": group, "image": "9.9.9"}, 404),
        ({"group": group, "image": "1.1.0", "device_id": elsewhere}, 404),
        ({"group": group, "image": "1.1.0", "device_id": "XYZ"}, 400),
        ({"group": "Nope/Nope", "image": "1.1.0"}, 404),
    ]
    for body, status in cases:
        r = fleet.call("POST", "/os-blocklist-clears", json=body)
        assert r.status_code == status, (body, r.text)
        assert "error" in r.json()
    assert "blocklist_clears" not in _custom(settings, group)["bastion"]  # type: ignore[operator]


def test_unclaim_removes_the_device_clears_and_keeps_the_group_clears(
    fleet: Fleet, session_factory: sessionmaker[Session], tenant: CreatedTenant
) -> None:
    """A clear made for one device belongs to that ownership: after an unclaim it is gone (issue 8 follow-up)."""
    image = fleet.os(generate_private_key(), "1.1.0")
    group = fleet.groups["Production"]
    leaving, staying = (_device_in(session_factory, tenant.tenant_id, group) for _ in range(2))
    for device_id in (leaving, staying, None):
        body = {"group": group, "image": image["measurement"]} | ({"device_id": device_id} if device_id else {})
        assert fleet.call("POST", "/os-blocklist-clears", json=body).status_code == 201
    r = fleet.call("POST", f"/devices/{leaving}/unclaim")
    assert r.status_code == 200, r.text
    with session_factory() as session:
        left = sorted((c.device_id or "") for c in session.scalars(select(OsBlocklistClear)))
    assert left == sorted(["", staying])
    listed = fleet.call("GET", "/os-blocklist-clears", params={"group": group}).json()
    assert leaving not in {c["device_id"] for c in listed}
