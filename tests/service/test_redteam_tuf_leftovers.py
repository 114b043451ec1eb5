"""Red team: what a deleted group can leave on disk that neither the delete nor the start-up reconcile removes."""

from __future__ import annotations

import datetime as dt

import pytest
from fleet_world import Fleet
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.config import Settings
from bastion.service.fleet import targets as fleet_targets
from bastion.service.fleet.targets import TufPublisher, publish_committed, reconcile_groups
from bastion.service.tenants.service import CreatedTenant
from bastion.service.tuf.layout import keys_dir, metadata_dir
from bastion.service.tuf.repository import TIMESTAMP_FILE, list_groups
from conftest import TestClient


def test_the_reconcile_removes_a_gone_groups_half_created_repository_with_its_keys(
    client: TestClient,
    tenant: CreatedTenant,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A creation that stopped after its root (keys sealed, no timestamp) of a group deleted since."""
    fleet = Fleet(client, tenant.admin_token, session_factory)
    night = fleet.call("POST", "/device-groups", json={"product": "Lamp", "name": "Night shift"}).json()["id"]
    (metadata_dir(settings, night) / TIMESTAMP_FILE).unlink()  # as a crash before the first timestamp
    assert keys_dir(settings, night).is_dir()
    with monkeypatch.context() as crash:
        crash.setattr(fleet_targets, "remove_repositories", lambda settings, ids: 0)  # killed before the removal
        assert fleet.call("DELETE", f"/device-groups/{night}").status_code == 204
    with session_factory() as session:
        reconcile_groups(session.get_bind(), settings, now=dt.datetime.now(dt.UTC), publisher=TufPublisher())
    assert not (settings.home / "blobs" / "tuf" / night).exists()  # sealed keys of a gone group stayed


def test_a_late_publish_of_a_deleted_group_leaves_no_directory(
    client: TestClient, tenant: CreatedTenant, *, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """A publish scheduled by a change that committed just before the delete runs after the removal."""
    fleet = Fleet(client, tenant.admin_token, session_factory)
    night = fleet.call("POST", "/device-groups", json={"product": "Lamp", "name": "Night shift"}).json()["id"]
    assert fleet.call("DELETE", f"/device-groups/{night}").status_code == 204
    with session_factory() as session:
        bind = session.get_bind()
        assert publish_committed(bind, settings, night, now=dt.datetime.now(dt.UTC), publisher=TufPublisher()) is None
        reconcile_groups(bind, settings, now=dt.datetime.now(dt.UTC), publisher=TufPublisher())
    assert not (settings.home / "blobs" / "tuf" / night).exists()


def test_the_reconcile_keeps_the_repository_of_a_group_created_while_it_runs(
    client: TestClient,
    tenant: CreatedTenant,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another worker creates (and publishes) a group after this worker's start-up reconcile read the group list."""
    fleet = Fleet(client, tenant.admin_token, session_factory)
    created: list[str] = []

    def hook(step: str, _group_id: str) -> None:
        if step == fleet_targets.STEP_PUBLISHED and not created:
            created.append("")
            r = fleet.call("POST", "/device-groups", json={"product": "Lamp", "name": "Late shift"})
            assert r.status_code == 201, r.text
            created[0] = r.json()["id"]

    monkeypatch.setattr(fleet_targets, "fault_hook", hook)
    with session_factory() as session:
        reconcile_groups(session.get_bind(), settings, now=dt.datetime.now(dt.UTC), publisher=TufPublisher())
    assert created[0]
    assert created[0] in list_groups(settings)  # its repository and keys were removed as a gone group's
