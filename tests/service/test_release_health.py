"""Release health: crash-free device rates per release (app and OS), new buckets, through real ingest."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fleet_world import Fleet, StatusDevice, make_status_device
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.errorreports import health
from bastion.service.errorreports.health import ReleaseHealth, new_buckets, release_health
from bastion.service.models import Device
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient


def _record(at: dt.datetime, category: str, event_type: str, component: str = "", version: str = "") -> dict[str, Any]:
    return {
        "category": category,
        "event_class": "Error",
        "event_type": event_type,
        "component_id": component,
        "version": version,
        "count": 1,
        "first_at": int(at.timestamp()),
        "last_at": int(at.timestamp()),
        "description": f"{category} {event_type}",
    }


class World:
    def __init__(
        self, client: TestClient, tenant: CreatedTenant, sessions: sessionmaker[Session], key: bytes, clock: FakeClock
    ) -> None:
        self.client, self.tenant, self.sessions, self.key, self.clock = client, tenant, sessions, key, clock

    def device(self) -> StatusDevice:
        return make_status_device(
            self.sessions, owner_tenant=self.tenant.tenant_id, master_key=self.key, now=self.clock()
        )

    def send(self, device: StatusDevice, **kw: Any) -> None:
        r = self.client.post(ENDPOINT, content=batch(device, iat=self.clock(), **kw), headers=COSE)
        assert r.status_code == 200, r.text

    def health(self, component: str, version: str, **kw: Any) -> ReleaseHealth:
        now = self.clock()
        kw.setdefault("since", now - dt.timedelta(hours=1))
        with self.sessions() as session:
            return release_health(
                session, self.tenant.tenant_id, component_id=component, version=version, until=now, **kw
            )


@pytest.fixture
def world(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> World:
    return World(client, tenant, session_factory, master_key, clock)


def test_app_release_counts_devices_seen_and_devices_that_crashed(world: World) -> None:
    now = world.clock()
    devices = [world.device() for _ in range(4)]
    for d in devices:
        world.send(d, installed=[("app1", "1.0.0")])  # the check-in heartbeat: an empty batch
    world.send(devices[0], records=[crash(now, count=5), crash(now, function="other")])
    world.send(devices[1], records=[_record(now, "AppExit", "exit_code", "app1", "1.0.0")])  # an exit is no crash
    world.send(devices[2], records=[_record(now, "Watchdog", "watchdog_kill", "app1", "1.0.0")])
    world.send(devices[3], records=[crash(now, version="0.9.0")])  # another release of the app
    assert world.health("app1", "1.0.0") == ReleaseHealth(devices=4, crashed_devices=2, crash_free_rate=0.5)
    assert world.health("app1", "2.0.0") == ReleaseHealth(devices=0, crashed_devices=0, crash_free_rate=None)
    assert world.health("app1", "1.0.0", device_ids=[devices[0].device_id, devices[1].device_id]) == ReleaseHealth(
        devices=2, crashed_devices=1, crash_free_rate=0.5
    )
    assert world.health("app1", "1.0.0", device_ids=[]).devices == 0


def test_os_release_counts_app_crashes_and_os_crashes_under_that_os(world: World) -> None:
    now = world.clock()
    a, b, c, d = (world.device() for _ in range(4))
    for dev in (a, b, c):
        world.send(dev, os_version="2.0.0")
    world.send(d, os_version="1.0.0")
    world.send(a, os_version="2.0.0", records=[_record(now, "OS", "os_crash", "", "2.0.0")])
    world.send(b, os_version="2.0.0", records=[crash(now)])
    world.send(c, os_version="2.0.0", records=[_record(now, "Update", "update_failed", "", "2.0.0")])
    world.send(d, os_version="1.0.0", records=[_record(now, "OS", "os_crash", "", "1.0.0")])
    assert world.health("", "2.0.0") == ReleaseHealth(devices=3, crashed_devices=2, crash_free_rate=1 / 3)
    assert world.health("", "1.0.0") == ReleaseHealth(devices=1, crashed_devices=1, crash_free_rate=0.0)


def test_window_and_group_bound_both_the_population_and_the_crashes(world: World) -> None:
    start = world.clock()
    old, fresh, other_group = world.device(), world.device(), world.device()
    world.send(old, records=[crash(start)])
    world.clock.advance(dt.timedelta(hours=3))
    now = world.clock()
    world.send(fresh, records=[crash(now - dt.timedelta(hours=2))])  # a crash before the window, sent late
    # The group is the service's record of the device (a batch's group_id claim is ignored).
    group = Fleet(world.client, world.tenant.admin_token).groups["Production"]
    with world.sessions() as session:
        row = session.get(Device, other_group.device_id)
        assert row is not None
        row.group_id = group
        session.commit()
    world.send(other_group, override={"group_id": "g-claimed"}, records=[crash(now)])
    # The window's last hour: old is not in the population; fresh's crash is outside the window.
    assert world.health("app1", "1.0.0") == ReleaseHealth(devices=2, crashed_devices=1, crash_free_rate=0.5)
    assert world.health("app1", "1.0.0", group_id=group) == ReleaseHealth(1, 1, 0.0)
    assert world.health("app1", "1.0.0", group_id="g-claimed") == ReleaseHealth(0, 0, None)
    assert world.health("app1", "1.0.0", since=start - dt.timedelta(minutes=1)) == ReleaseHealth(3, 3, 0.0)


def test_a_stage_of_any_size_is_counted_in_bounded_chunks(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "MAX_DEVICE_IDS_PER_QUERY", 2)
    now = world.clock()
    devices = [world.device() for _ in range(5)]
    for index, d in enumerate(devices):
        world.send(d, records=[crash(now)] if index % 2 == 0 else [])
    ids = [d.device_id for d in devices] + ["f" * 64]  # an unknown ID changes nothing
    assert world.health("app1", "1.0.0", device_ids=ids) == ReleaseHealth(5, 3, 0.4)


def test_new_buckets_are_those_first_seen_in_this_release_since_the_start(world: World) -> None:
    start = world.clock()
    dev = world.device()
    world.send(dev, records=[crash(start, function="old_bug")])  # v1's known crash
    world.clock.advance(dt.timedelta(minutes=30))
    since = world.clock()
    world.clock.advance(dt.timedelta(minutes=5))
    now = world.clock()
    world.send(
        dev,
        installed=[("app1", "2.0.0")],
        records=[
            crash(now, version="2.0.0", function="old_bug"),
            crash(now, version="2.0.0", function="new_bug"),
            crash(now, version="1.0.0", function="v1_only_bug"),
        ],
    )
    with world.sessions() as session:
        tenant = world.tenant.tenant_id
        fresh = new_buckets(session, tenant, component_id="app1", version="2.0.0", since=since)
        assert len(fresh) == 1
        assert new_buckets(session, tenant, component_id="app1", version="2.0.0", since=start) != []
        assert new_buckets(session, tenant, component_id="app2", version="2.0.0", since=since) == []
        assert new_buckets(session, tenant, component_id="app1", version="1.0.0", since=since) != fresh
