"""The console pages' view models, on SQLite and PostgreSQL (no HTTP, no templates)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _pages_world import seed_fleet
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.console.views import fleet
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock


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
