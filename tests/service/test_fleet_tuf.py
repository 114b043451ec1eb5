"""The fleet on the real TUF slice: groups get repositories, deployments and OS feeds become signed targets."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from fleet_world import APP_COMPONENT, OCTET, OS_COMPONENT, Fleet, make_status_device, os_image, trust_os_key
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from tuf_attacks import download_headers

from bastion.crypto.keys import generate_private_key
from bastion.service import tuf
from bastion.service.config import Settings
from bastion.service.fleet import targets as fleet_targets
from bastion.service.fleet.targets import TufPublisher, reconcile_groups, update_pointers
from bastion.service.models import DeviceGroup
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient


def _targets(client: TestClient, group_id: str) -> dict[str, dict[str, object]]:
    """Walk timestamp -> snapshot -> targets over HTTP, as a device does."""
    timestamp = client.get(f"/tuf/{group_id}/metadata/timestamp.json")
    assert timestamp.status_code == 200, timestamp.text
    snapshot_version = json.loads(timestamp.content)["signed"]["meta"]["snapshot.json"]["version"]
    snapshot = json.loads(client.get(f"/tuf/{group_id}/metadata/{snapshot_version}.snapshot.json").content)
    targets_version = snapshot["signed"]["meta"]["targets.json"]["version"]
    targets = json.loads(client.get(f"/tuf/{group_id}/metadata/{targets_version}.targets.json").content)
    return dict(targets["signed"]["targets"])


def test_deployment_and_os_publish_reach_the_group_repository(
    client: TestClient,
    tenant: CreatedTenant,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    fleet = Fleet(client, tenant.admin_token, session_factory)
    production = fleet.groups["Production"]
    assert _targets(client, production) == {}
    r = fleet.call(
        "POST",
        "/os-images",
        content=os_image(trust_os_key(session_factory, generate_private_key()), "1.0.0"),
        headers=OCTET,
    )
    assert r.status_code == 201, r.text
    image = fleet.app("1.0.0")
    assert fleet.deploy(production, str(image["id"])).status_code == 201
    targets = _targets(client, production)
    app_path, os_path = f"apps/{APP_COMPONENT}/1.0.0.img", f"os/{OS_COMPONENT}/1.0.0.img"
    assert set(targets) == {app_path, os_path}
    assert targets[app_path]["hashes"] == {"sha256": image["sha256"]}
    assert targets[app_path]["custom"] == {
        "bastion": {"image_type": "app", "component_id": APP_COMPONENT, "version": "1.0.0", "security_version": 1}
    }
    served = client.get(
        f"/tuf/{production}/targets/apps/{APP_COMPONENT}/{image['sha256']}.1.0.0.img",
        headers=download_headers(settings, production, now=clock()),
    )
    assert served.status_code == 200
    assert len(served.content) == image["size"]
    # Development (No3rdPartyAppUpdates) gets the OS only.
    assert set(_targets(client, fleet.groups["Development"])) == {os_path}

    # The attestation answer's pointer for a device in the group bootstraps the group's root.
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    with session_factory() as session:
        assert update_pointers(session, device.device_id, settings=settings) is None
    fleet.call("POST", f"/devices/{device.device_id}/group", json={"group": production})
    fleet.call(
        "PATCH", f"/device-groups/{production}", json={"maintenance_window": {"start": "01:00", "duration_minutes": 60}}
    )
    with session_factory() as session:
        pointer = update_pointers(session, device.device_id, settings=settings)
    assert pointer is not None
    assert pointer["group_id"] == production
    assert pointer["tuf_base"] == f"/tuf/{production}"
    assert base64.b64decode(pointer["root"]) == tuf.group_root(settings, production)
    assert pointer["maintenance_window"] == {"start": "01:00", "duration_minutes": 60}


def test_a_deleted_groups_repository_and_keys_go_with_it(
    client: TestClient, tenant: CreatedTenant, *, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    fleet = Fleet(client, tenant.admin_token, session_factory)
    r = fleet.call("POST", "/device-groups", json={"product": "Lamp", "name": "Night shift"})
    assert r.status_code == 201, r.text
    night = r.json()["id"]
    assert _targets(client, night) == {}  # published: metadata and sealed keys on disk
    product_id = fleet.call("GET", "/products/Lamp").json()["id"]
    repositories = settings.home / "blobs" / "tuf"
    assert (repositories / night / "keys").is_dir()
    assert night in tuf.list_groups(settings)

    assert fleet.call("DELETE", f"/device-groups/{night}").status_code == 204
    assert not (repositories / night).exists()
    assert night not in tuf.list_groups(settings)  # so the refresher never re-signs it
    assert client.get(f"/tuf/{night}/metadata/timestamp.json").status_code == 404
    assert not [p for p in repositories.iterdir() if p.name.startswith(".")]  # no tombstone left

    # A product's delete takes its default groups' repositories too.
    defaults = list(fleet.groups.values())
    assert all(g in tuf.list_groups(settings) for g in defaults)
    assert fleet.call("DELETE", f"/products/{product_id}").status_code == 204
    assert not any((repositories / g).exists() for g in defaults)


def test_the_start_up_reconcile_removes_the_repository_of_a_group_that_is_gone(
    client: TestClient,
    tenant: CreatedTenant,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker killed between the delete's commit and the removal leaves a repository: start-up removes it."""
    fleet = Fleet(client, tenant.admin_token, session_factory)
    night = fleet.call("POST", "/device-groups", json={"product": "Lamp", "name": "Night shift"}).json()["id"]
    with monkeypatch.context() as crash:
        crash.setattr(fleet_targets, "remove_repositories", lambda settings, ids: 0)  # killed before the removal
        assert fleet.call("DELETE", f"/device-groups/{night}").status_code == 204
    assert night in tuf.list_groups(settings)
    kept = set(fleet.groups.values())
    with session_factory() as session:
        checked = reconcile_groups(session.get_bind(), settings, now=dt.datetime.now(dt.UTC), publisher=TufPublisher())
    assert checked >= len(kept)
    assert night not in tuf.list_groups(settings)
    assert kept <= set(tuf.list_groups(settings))  # the others are untouched


def test_the_reconcile_keeps_a_repository_whose_group_is_missing_without_a_record_of_its_deletion(
    client: TestClient,
    tenant: CreatedTenant,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service started on the wrong (or a restored, older) database must not wipe repositories and keys."""
    fleet = Fleet(client, tenant.admin_token, session_factory)
    night = fleet.call("POST", "/device-groups", json={"product": "Lamp", "name": "Night shift"}).json()["id"]
    with session_factory() as session:
        session.execute(delete(DeviceGroup).where(DeviceGroup.id == night))  # not deleted: just not in this database
        session.commit()
        reconcile_groups(session.get_bind(), settings, now=dt.datetime.now(dt.UTC), publisher=TufPublisher())
    assert night in tuf.list_groups(settings)
    assert (settings.home / "blobs" / "tuf" / night / "keys").is_dir()
    assert any(night in r.getMessage() and "no record of its deletion" in r.getMessage() for r in caplog.records)
