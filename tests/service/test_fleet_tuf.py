"""The fleet on the real TUF slice: groups get repositories, deployments and OS feeds become signed targets."""

from __future__ import annotations

import base64
import json

from fleet_world import APP_COMPONENT, OCTET, OS_COMPONENT, Fleet, make_status_device, os_image, trust_os_key
from sqlalchemy.orm import Session, sessionmaker
from tuf_attacks import download_headers

from bastion.crypto.keys import generate_private_key
from bastion.service import tuf
from bastion.service.config import Settings
from bastion.service.fleet.targets import update_pointers
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
