"""The fleet overview snapshot: fresh hits, one background refresh when stale, recompute when stale long."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.console.views.fleet import FleetOverview
from bastion.service.console.views.fleet_cache import MAX_ENTRIES, FleetSnapshot, FleetSnapshots
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient
from console._pages_world import seed_fleet
from console.conftest import sign_in

T0 = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def _overview(total: int) -> FleetOverview:
    return FleetOverview(
        total=total, by_os_version=(), by_group=(), by_standing=(), by_last_seen=(), activity=(), window="24h"
    )


class Deferred:
    """A spawn that keeps the refresh until the test runs it."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def __call__(self, run: Callable[[], None]) -> None:
        self.pending.append(run)

    def run_all(self) -> None:
        while self.pending:
            self.pending.pop()()


def _cache(spawn: Deferred, max_age_s: int = 30) -> FleetSnapshots:
    return FleetSnapshots(max_age=dt.timedelta(seconds=max_age_s), spawn=spawn)


def test_a_fresh_snapshot_is_served_without_computing() -> None:
    spawn = Deferred()
    cache = _cache(spawn)
    calls: list[int] = []

    def compute() -> FleetSnapshot:
        calls.append(1)
        return FleetSnapshot(_overview(len(calls)), T0)

    first = cache.get(("t", "24h"), now=T0, compute=compute, background=compute)
    again = cache.get(("t", "24h"), now=T0 + dt.timedelta(seconds=29), compute=compute, background=compute)
    assert first is again
    assert calls == [1]
    assert spawn.pending == []


def test_a_stale_snapshot_is_served_and_refreshed_once_in_the_background() -> None:
    spawn = Deferred()
    cache = _cache(spawn)
    cache.get(("t", "24h"), now=T0, compute=lambda: FleetSnapshot(_overview(1), T0), background=lambda: None)  # type: ignore[arg-type,return-value]
    later = T0 + dt.timedelta(seconds=31)
    refreshed = FleetSnapshot(_overview(2), later)
    for _ in range(3):  # many views of a stale snapshot start one refresh
        served = cache.get(("t", "24h"), now=later, compute=pytest.fail, background=lambda: refreshed)  # type: ignore[arg-type]
        assert served.overview.total == 1
    assert len(spawn.pending) == 1
    spawn.run_all()
    served = cache.get(("t", "24h"), now=later, compute=pytest.fail, background=pytest.fail)  # type: ignore[arg-type]
    assert served is refreshed


def test_a_very_stale_snapshot_is_recomputed_before_answering() -> None:
    spawn = Deferred()
    cache = _cache(spawn)
    cache.get(("t", "24h"), now=T0, compute=lambda: FleetSnapshot(_overview(1), T0), background=pytest.fail)  # type: ignore[arg-type]
    much_later = T0 + dt.timedelta(seconds=301)
    served = cache.get(
        ("t", "24h"),
        now=much_later,
        compute=lambda: FleetSnapshot(_overview(5), much_later),
        background=pytest.fail,  # type: ignore[arg-type]
    )
    assert served.overview.total == 5
    assert spawn.pending == []


def test_a_failed_refresh_keeps_the_old_snapshot_and_a_later_view_retries() -> None:
    spawn = Deferred()
    cache = _cache(spawn)
    cache.get(("t", "24h"), now=T0, compute=lambda: FleetSnapshot(_overview(1), T0), background=pytest.fail)  # type: ignore[arg-type]
    later = T0 + dt.timedelta(seconds=40)

    def broken() -> FleetSnapshot:
        raise RuntimeError("database gone")

    cache.get(("t", "24h"), now=later, compute=pytest.fail, background=broken)  # type: ignore[arg-type]
    spawn.run_all()
    served = cache.get(("t", "24h"), now=later, compute=pytest.fail, background=broken)  # type: ignore[arg-type]
    assert served.overview.total == 1
    assert len(spawn.pending) == 1  # retried


def test_tenants_and_windows_are_separate_and_the_cache_is_bounded() -> None:
    spawn = Deferred()
    cache = _cache(spawn)
    a = cache.get(("a", "24h"), now=T0, compute=lambda: FleetSnapshot(_overview(1), T0), background=pytest.fail)  # type: ignore[arg-type]
    b = cache.get(("b", "24h"), now=T0, compute=lambda: FleetSnapshot(_overview(2), T0), background=pytest.fail)  # type: ignore[arg-type]
    w = cache.get(("a", "7d"), now=T0, compute=lambda: FleetSnapshot(_overview(3), T0), background=pytest.fail)  # type: ignore[arg-type]
    assert (a.overview.total, b.overview.total, w.overview.total) == (1, 2, 3)
    for n in range(MAX_ENTRIES + 10):
        cache.get((f"t{n}", "24h"), now=T0, compute=lambda: FleetSnapshot(_overview(0), T0), background=pytest.fail)  # type: ignore[arg-type]
    assert len(cache._entries) == MAX_ENTRIES


def test_max_age_zero_computes_on_every_view() -> None:
    spawn = Deferred()
    cache = _cache(spawn, max_age_s=0)
    calls: list[int] = []

    def compute() -> FleetSnapshot:
        calls.append(1)
        return FleetSnapshot(_overview(len(calls)), T0)

    cache.get(("t", "24h"), now=T0, compute=compute, background=pytest.fail)  # type: ignore[arg-type]
    served = cache.get(("t", "24h"), now=T0, compute=compute, background=pytest.fail)  # type: ignore[arg-type]
    assert served.overview.total == 2


def test_the_fleet_page_says_how_old_its_counts_are_and_refreshes_them(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    sign_in(client, tenant.admin_token)
    first = client.get("/console/fleet").text
    assert ">0 devices<" in first
    assert "(0 s ago)" in first
    with session_factory() as session:
        seed_fleet(session, tenant.tenant_id, now=clock())
    clock.advance(dt.timedelta(seconds=10))
    cached = client.get("/console/fleet").text
    assert ">0 devices<" in cached  # within 30 s: the snapshot
    assert "(10 s ago)" in cached
    clock.advance(dt.timedelta(seconds=300))  # past ten times the age: recomputed before answering
    fresh = client.get("/console/fleet").text
    assert ">10 devices<" in fresh
    assert "(0 s ago)" in fresh
