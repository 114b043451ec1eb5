"""The console pages' view models, on SQLite and PostgreSQL (no HTTP, no templates)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.service.console.views import buckets, deployments, fleet, osfeeds, products
from bastion.service.deployments.service import deployment_report
from bastion.service.errorreports.service import list_buckets
from bastion.service.models import Deployment, Device, ErrorBucket, ErrorDailyCount, Rollout
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient
from console._pages_world import XSS, FakeHealth, FakePublisher, Fleet, device_id, make_product, seed_fleet


def _counts(rows: object) -> dict[str, int]:
    return {c.label: c.value for c in rows}  # type: ignore[attr-defined]


def test_fleet_overview_counts_every_breakdown_from_one_scan(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock
) -> None:
    now = clock()
    with session_factory() as session:
        seeded = seed_fleet(session, tenant.tenant_id, now=now)
        view = fleet.fleet_overview(session, tenant.tenant_id, now=now)
    assert view.total == 10
    assert _counts(view.by_standing) == {"ok": 5, "failed": 2, "expired": 1, "revoked": 1, "never": 1}
    assert _counts(view.by_os_version) == {"1.0.0": 6, "1.1.0": 3, "(none)": 1}
    assert _counts(view.by_group) == {"widget/Field Test": 7, "widget/Production": 2, "(none)": 1}
    assert {c.key for c in view.by_group} == {*seeded.group_ids, None}
    assert _counts(view.by_last_seen) == {"<1h": 4, "<24h": 3, "<7d": 1, "older": 1, "never": 1}


def test_fleet_overview_falls_back_to_group_by_past_the_column_bound(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = clock()
    with session_factory() as session:
        seed_fleet(session, tenant.tenant_id, now=now)
        by_filter = fleet.fleet_overview(session, tenant.tenant_id, now=now)
        monkeypatch.setattr(fleet, "MAX_GROUP_ROWS", 1)
        by_group_by = fleet.fleet_overview(session, tenant.tenant_id, now=now)
    assert _counts(by_group_by.by_group) == _counts(by_filter.by_group)
    assert _counts(by_group_by.by_os_version) == _counts(by_filter.by_os_version)
    assert by_group_by.by_standing == by_filter.by_standing


def test_fleet_overview_names_versions_that_were_never_published(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock
) -> None:
    now = clock()
    with session_factory() as session:
        seed_fleet(session, tenant.tenant_id, now=now)
        device = session.get(Device, device_id(0))
        assert device is not None
        device.os_version = "9.9.9-dev"
        session.commit()
        view = fleet.fleet_overview(session, tenant.tenant_id, now=now)
    assert _counts(view.by_os_version) == {"1.0.0": 5, "1.1.0": 3, "9.9.9-dev": 1, "(none)": 1}


def test_fleet_activity_buckets_attestations_per_hour_and_day(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock
) -> None:
    now = clock()
    with session_factory() as session:
        seed_fleet(session, tenant.tenant_id, now=now)
        hourly = fleet.attestation_activity(session, tenant.tenant_id, now=now, window="24h")
        daily = fleet.attestation_activity(session, tenant.tenant_id, now=now, window="7d")
    assert len(hourly) == 24
    assert hourly[-1].start == now.replace(minute=0, second=0, microsecond=0)
    # T0 is 12:00 sharp: "half an hour ago" falls in the 11:00 bucket, "three hours ago" in 09:00.
    by_hour = {p.start.hour: (p.ok, p.failed) for p in hourly if p.ok or p.failed}
    assert by_hour == {11: (4, 1), 9: (2, 0)}
    assert len(daily) == 7
    assert sum(p.ok for p in daily) == 6
    assert sum(p.failed for p in daily) == 2  # the one three days ago is inside the week


def test_fleet_overview_never_counts_another_tenants_devices(
    session_factory: sessionmaker[Session],
    make_tenant: Callable[[str], CreatedTenant],
    clock: FakeClock,
) -> None:
    acme, other = make_tenant("acme"), make_tenant("other")
    now = clock()
    with session_factory() as session:
        seed_fleet(session, other.tenant_id, now=now, prefix="o")
        view = fleet.fleet_overview(session, acme.tenant_id, now=now)
    assert view.total == 0
    assert all(p.ok == p.failed == 0 for p in view.activity)
    assert view.by_group == []
    assert view.by_os_version == []


def test_fleet_overview_rejects_an_unknown_window(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock
) -> None:
    with session_factory() as session, pytest.raises(KeyError):
        fleet.fleet_overview(session, tenant.tenant_id, now=clock(), window="1y")


def test_products_page_shows_groups_with_policy_window_and_device_counts(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock
) -> None:
    now = clock()
    with session_factory() as session:
        seeded = seed_fleet(session, tenant.tenant_id, now=now)
        make_product(session, tenant.tenant_id, now=now, name=XSS, groups=("Development",))
        session.commit()
        page = products.products_page(session, tenant.tenant_id, offset=0, limit=1)
        second = products.products_page(session, tenant.tenant_id, offset=1, limit=1)
        only = products.products_page(session, tenant.tenant_id, offset=0, limit=10, name_prefix="wid")
        none = products.products_page(session, tenant.tenant_id, offset=0, limit=10, name_prefix="%")
    assert page.total == 2
    assert [p.name for p in page.products] == [XSS]  # "<" sorts before "w"
    assert [p.name for p in second.products] == ["widget"]
    groups = {g.name: g for g in second.products[0].groups}
    assert groups["Field Test"].devices == 7
    assert groups["Field Test"].window == "any time"
    assert groups["Production"].devices == 2
    assert groups["Production"].window == "02:00-04:00 UTC"
    assert groups["Production"].os_feed == "retail"
    assert {g.id for g in groups.values()} == set(seeded.group_ids)
    assert only.total == 1
    assert none.total == 0  # a LIKE wildcard in the prefix is a literal


def test_window_text_wraps_past_midnight() -> None:
    assert products.window_text("23:30", 90) == "23:30-01:00 UTC"
    assert products.window_text(None, None) == "any time"


def test_deployments_page_and_view_show_the_staged_rollout_and_its_halt(
    client: TestClient,
    app: FastAPI,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    app.state.tuf_publisher = FakePublisher()
    health = FakeHealth()
    app.state.rollout_health = health
    fleet_api = Fleet(client, tenant.admin_token, session_factory)
    group = fleet_api.groups["Production"]
    with session_factory() as session:
        session.add_all(
            Device(
                device_id=device_id(n), tenant_id=tenant.tenant_id, claimed_at=clock(), claimed_by="t", group_id=group
            )
            for n in range(20)
        )
        session.commit()
    v1, v2 = fleet_api.app("1.0.0"), fleet_api.app("2.0.0")
    assert fleet_api.deploy(group, str(v1["id"])).status_code == 201
    body = {"group": group, "images": [str(v2["id"])], "rollout": {"stages": [20, 50, 100], "soak_seconds": 60}}
    staged = fleet_api.call("POST", "/deployments", json=body)
    assert staged.status_code == 201, staged.text
    with session_factory() as session:
        page = deployments.deployments_page(session, tenant.tenant_id, offset=0, limit=10)
        assert [r.id for r in page.rows] == [staged.json()["id"], staged.json()["id"] - 1]
        assert page.rows[0].rollout_state == "running"
        assert page.rows[0].percent == 20.0
        assert page.rows[1].rollout_state is None
        assert page.rows[0].group_name == "Lamp/Production"
        rollout = session.scalars(select(Rollout)).one()
        rollout.state, rollout.halt_reason = "halted", "crash_drop: crash-free 50.0% < 95.0%"
        session.commit()
        deployment = session.get(Deployment, staged.json()["id"])
        assert deployment is not None
        report = deployment_report(session, deployment, max_devices=5)
        view = deployments.deployment_view(session, report, health, now=clock())
    assert view.rollout is not None
    assert view.rollout.state == "halted"
    assert view.rollout.halt_reason == "crash_drop: crash-free 50.0% < 95.0%"
    assert view.rollout.can_resume
    assert view.rollout.can_abort
    assert view.finished  # nothing changes by itself once halted: the live refresh stops
    assert [s.percent for s in view.rollout.stages] == [20.0, 50.0, 100.0]
    assert view.rollout.stages[0].current
    assert view.rollout.stages[-1].devices == 20
    assert sum(view.counts.values()) == 20
    assert len(view.devices) == 5


def test_osfeeds_view_lists_each_feed_and_what_can_be_promoted(
    client: TestClient, app: FastAPI, tenant: CreatedTenant, session_factory: sessionmaker[Session]
) -> None:
    app.state.tuf_publisher = FakePublisher()
    fleet_api = Fleet(client, tenant.admin_token, session_factory)
    key = generate_private_key()
    retail = fleet_api.os(key, "1.0.0")
    evaluation = fleet_api.os(key, "1.1.0", feed="retail-eval")
    with session_factory() as session:
        view = osfeeds.osfeeds_view(session, tenant.tenant_id)
    feeds = {f.name: f for f in view.feeds}
    assert [i.version for i in feeds["retail"].images] == ["1.0.0"]
    assert [i.version for i in feeds["retail-eval"].images] == ["1.1.0", "1.0.0"]
    assert [i.id for i in feeds["retail-eval"].images if i.promotable] == [evaluation["id"]]
    assert not any(i.promotable for i in feeds["retail"].images)
    assert "Lamp/Production" in feeds["retail"].groups
    assert "Lamp/Field Test OS Evaluation" in feeds["retail-eval"].groups
    promoted = fleet_api.call("POST", "/os-feeds/retail/images", json={"image": evaluation["measurement"]})
    assert promoted.status_code == 200, promoted.text
    with session_factory() as session:
        after = {f.name: f for f in osfeeds.osfeeds_view(session, tenant.tenant_id).feeds}
    assert [i.version for i in after["retail"].images] == ["1.1.0", "1.0.0"]
    assert not any(i.promotable for f in after.values() for i in f.images)
    assert retail["id"] in {i.id for i in after["retail"].images}


def test_bucket_trends_sum_raw_events_and_daily_rollups_per_day(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock
) -> None:
    now = clock()
    day = dt.timedelta(days=1)
    with session_factory() as session:
        for bid in ("b1", "b2"):
            session.add(
                ErrorBucket(
                    id=bid,
                    tenant_id=tenant.tenant_id,
                    fingerprint=bid * 32,
                    algorithm=1,
                    category="AppCrash",
                    event_type="signal",
                    component_id="",
                    title=XSS,
                    state="open",
                    first_seen=now - 20 * day,
                    last_seen=now - (day if bid == "b1" else 2 * day),
                    event_count=9,
                    device_count=1,
                    first_version="1",
                    last_version="1",
                )
            )
        session.flush()
        session.add_all(
            [
                ErrorDailyCount(
                    tenant_id=tenant.tenant_id,
                    day=(now - 3 * day).date(),
                    bucket_id="b1",
                    category="AppCrash",
                    event_type="signal",
                    component_id="",
                    version="1",
                    os_version="1",
                    events=7,
                    devices=1,
                ),
                ErrorDailyCount(
                    tenant_id=tenant.tenant_id,
                    day=(now - 30 * day).date(),  # outside the trend
                    bucket_id="b1",
                    category="AppCrash",
                    event_type="signal",
                    component_id="",
                    version="1",
                    os_version="1",
                    events=100,
                    devices=1,
                ),
            ]
        )
        session.commit()
        page = list_buckets(session, tenant.tenant_id, limit=10)
        view = buckets.buckets_view(session, tenant.tenant_id, page, now=now)
        other = buckets.bucket_trends(session, "another-tenant", ["b1"], now=now)
    rows = {r.bucket.id: r for r in view.rows}
    assert [r.bucket.id for r in view.rows] == ["b1", "b2"]
    assert len(rows["b1"].trend) == buckets.TREND_DAYS
    assert rows["b1"].trend[-4] == 7
    assert sum(rows["b1"].trend) == 7
    assert sum(rows["b2"].trend) == 0
    assert view.days[-1] == now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert sum(other[1]["b1"]) == 0  # another tenant's roll-ups are not counted
