"""A worker killed at any point of any publishing path leaves TUF and the database agreeing after a restart.

Each path that changes a group's TUF state (product and group creation, group
update, OS publish, promotion and revocation, deployment) runs through the real
HTTP API and the real TUF publisher, and the worker "dies" at one of the
injected points of :mod:`bastion.service.fleet.targets` (``fault_hook``):
before the commit, after the commit before the publish, after the first group's
publish. At the moment of the kill no repository may offer an OS image the
database does not hold; after a restart (a new app, whose start-up reconciles
every group) every group's repository is exactly what the database says, and a
second restart changes no version (reconcile is idempotent). A retried OS
publish completes the missing TUF step and answers ``duplicate_os_image``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fleet_world import OCTET, Fleet, os_image, trust_os_key
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.service import tuf
from bastion.service.app import create_app
from bastion.service.config import Settings
from bastion.service.fleet import targets as fleet_targets
from bastion.service.models import DeviceGroup, OsImage
from bastion.service.tenants.service import CreatedTenant
from bastion.service.tuf.layout import metadata_dir
from conftest import FakeClock, TestClient


class Killed(Exception):  # noqa: N818 - it stands for SIGKILL
    """Raised from the fault hook: the worker dies there."""


@pytest.fixture
def fleet(client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]) -> Fleet:
    return Fleet(client, tenant.admin_token, session_factory)


@pytest.fixture
def os_key(session_factory: sessionmaker[Session]) -> PrivateKey:
    return trust_os_key(session_factory, generate_private_key())


@pytest.fixture(autouse=True)
def _restore_hook() -> Iterator[None]:
    yield
    fleet_targets.fault_hook = fleet_targets._no_fault


def _kill_at(step: str) -> None:
    def hook(reached: str, group_id: str) -> None:
        del group_id
        if reached == step:
            raise Killed(step)

    fleet_targets.fault_hook = hook


def _db_targets(sessions: sessionmaker[Session], settings: Settings) -> dict[str, dict[str, str]]:
    with sessions() as session:
        groups = session.scalars(select(DeviceGroup)).all()
        return {
            g.id: {t.path: t.blob_sha256 for t in fleet_targets.targets_for_group(session, g, settings)} for g in groups
        }


def _tuf_targets(settings: Settings, group_ids: list[str]) -> dict[str, dict[str, str] | None]:
    return {gid: tuf.published_targets(settings, gid) for gid in group_ids}


def _known_os(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(OsImage.measurement)))


def _versions(settings: Settings, group_ids: list[str]) -> dict[str, Any]:
    out = {}
    for gid in group_ids:
        ts = metadata_dir(settings, gid) / "timestamp.json"
        out[gid] = json.loads(ts.read_bytes())["signed"]["version"] if ts.is_file() else None
    return out


def _restart(settings: Settings, clock: FakeClock) -> FastAPI:
    app = create_app(settings, clock=clock, migrate_on_startup=False)
    with TestClient(app):  # the lifespan runs the start-up reconcile
        pass
    return app


def _assert_never_ahead(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """At any moment: a repository offers no OS image the database does not know.

    A revocation that is committed but not yet published leaves the revoked image
    offered until the reconcile; attestation refuses a revoked OS already.
    """
    known = _known_os(sessions)
    db = _db_targets(sessions, settings)
    for gid, served in _tuf_targets(settings, list(db)).items():
        for path, sha in (served or {}).items():
            if path.startswith("os/"):
                assert sha in known, (gid, path)


def _assert_agree(settings: Settings, sessions: sessionmaker[Session]) -> None:
    db = _db_targets(sessions, settings)
    assert _tuf_targets(settings, list(db)) == db


# --- the publishing paths ----------------------------------------------------------


def _product(fleet: Fleet, key: PrivateKey) -> Any:
    return fleet.call("POST", "/products", json={"name": "Second"})


def _group(fleet: Fleet, key: PrivateKey) -> Any:
    return fleet.call("POST", "/device-groups", json={"product": "Lamp", "name": "Canary"})


def _group_update(fleet: Fleet, key: PrivateKey) -> Any:
    return fleet.call("PATCH", f"/device-groups/{fleet.groups['Production']}", json={"os_feed": "retail-eval"})


def _os_publish(fleet: Fleet, key: PrivateKey) -> Any:
    return fleet.call("POST", "/os-images", content=os_image(key, "1.1.0"), headers=OCTET)


def _promote(fleet: Fleet, key: PrivateKey) -> Any:
    return fleet.call("POST", "/os-feeds/retail/images", json={"image": "1.2.0-rc.1"})


def _revoke(fleet: Fleet, key: PrivateKey) -> Any:
    return fleet.call("POST", "/os-images/1.0.0/revoke")


def _deploy(fleet: Fleet, key: PrivateKey) -> Any:
    image = fleet.app("1.0.0")
    return fleet.deploy(fleet.groups["Production"], str(image["id"]))


PATHS: dict[str, Callable[[Fleet, PrivateKey], Any]] = {
    "product": _product,
    "group": _group,
    "group_update": _group_update,
    "os_publish": _os_publish,
    "promote": _promote,
    "revoke": _revoke,
    "deploy": _deploy,
}
STEPS = [fleet_targets.STEP_SCHEDULED, fleet_targets.STEP_COMMITTED, fleet_targets.STEP_PUBLISHED]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_kill_at_each_point_of_each_path_heals_at_restart(  # noqa: PLR0917 - pytest fixtures
    fleet: Fleet,
    os_key: PrivateKey,
    settings: Settings,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    path: str,
    step: str,
) -> None:
    fleet.os(os_key, "1.0.0")
    fleet.os(os_key, "1.2.0-rc.1", feed="retail-eval")
    _assert_agree(settings, session_factory)
    _kill_at(step)
    try:
        answer = PATHS[path](fleet, os_key)
    except Killed:
        answer = None
    fleet_targets.fault_hook = fleet_targets._no_fault
    assert answer is None or answer.status_code >= 500, answer.text  # the worker died
    _assert_never_ahead(settings, session_factory)
    _restart(settings, clock)
    _assert_agree(settings, session_factory)
    groups = list(_db_targets(session_factory, settings))
    before = _versions(settings, groups)
    _restart(settings, clock)
    assert _versions(settings, groups) == before  # reconcile is idempotent: nothing re-signed


def test_a_retried_os_publish_completes_the_tuf_step(
    fleet: Fleet, os_key: PrivateKey, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    fleet.os(os_key, "1.0.0")
    _kill_at(fleet_targets.STEP_COMMITTED)
    with contextlib.suppress(Killed):
        _os_publish(fleet, os_key)
    fleet_targets.fault_hook = fleet_targets._no_fault
    assert _tuf_targets(settings, list(_db_targets(session_factory, settings))) != _db_targets(
        session_factory, settings
    )
    again = _os_publish(fleet, os_key)
    assert (again.status_code, again.json()["error"]) == (409, "duplicate_os_image")
    _assert_agree(settings, session_factory)


def test_a_rolled_back_session_publishes_nothing(
    fleet: Fleet, os_key: PrivateKey, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    fleet.os(os_key, "1.0.0")
    before = _tuf_targets(settings, list(_db_targets(session_factory, settings)))
    with session_factory() as session:
        group = session.get(DeviceGroup, fleet.groups["Production"])
        assert group is not None
        group.os_feed = "retail-eval"
        fleet_targets.republish(
            session,
            settings,
            group,
            now=fleet_targets.dt.datetime.now(fleet_targets.dt.UTC),
            publisher=fleet_targets.TufPublisher(),
        )
        session.rollback()
    assert _tuf_targets(settings, list(before)) == before


def test_concurrent_publishers_end_agreeing_with_the_last_commit(
    fleet: Fleet, os_key: PrivateKey, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Several workers (threads here; processes share the same file locks) publishing one group."""
    import threading

    fleet.os(os_key, "1.0.0")
    fleet.os(os_key, "1.2.0-rc.1", feed="retail-eval")
    group_id = fleet.groups["Production"]
    publisher = fleet_targets.TufPublisher()
    now = fleet_targets.dt.datetime.now(fleet_targets.dt.UTC)
    errors: list[BaseException] = []

    def worker(feeds: list[str]) -> None:
        try:
            for feed in feeds:
                with session_factory() as session:
                    group = session.get(DeviceGroup, group_id)
                    assert group is not None
                    group.os_feed = feed
                    fleet_targets.republish(session, settings, group, now=now, publisher=publisher)
                    session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(["retail-eval", "retail", "retail-eval"],)),
        threading.Thread(target=worker, args=(["retail", "retail-eval", "retail"],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    _assert_agree(settings, session_factory)
