"""The per-tenant bucket cap: past it, new fingerprints go to one overflow bucket per tenant, with a record."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fastapi import FastAPI
from fleet_world import make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.errorreports.bucket_cap import CAP_ACTION, cap_new_buckets, overflow_bucket_id
from bastion.service.errorreports.fingerprint import bucket_id
from bastion.service.errorreports.limits import ErrorReportSettings
from bastion.service.errors import ConfigError
from bastion.service.models import AuditEvent, ErrorBucket, ErrorEvent
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer


def _bucket(session: Session, tenant_id: str, bid: str, fingerprint: str, now: dt.datetime) -> None:
    session.add(
        ErrorBucket(
            id=bid, tenant_id=tenant_id, fingerprint=fingerprint, algorithm=1, category="AppCrash",
            event_type="python_exception", component_id="app1", title=fingerprint, state="open",
            first_seen=now, last_seen=now, event_count=1, device_count=1, first_version="1.0.0",
            last_version="1.0.0",
        )
    )  # fmt: skip


def _batch(tenant_id: str, names: list[str]) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]], list[Any]]:
    per_bucket = {bucket_id(tenant_id, n): [f"record of {n}"] for n in names}
    titles = {bucket_id(tenant_id, n): (n, f"title {n}") for n in names}
    events = [{"bucket_id": bucket_id(tenant_id, n), "name": n} for n in names]
    return per_bucket, titles, events


def _records(session: Session, tenant_id: str) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id, AuditEvent.action == CAP_ACTION)
    return list(session.scalars(query))


def test_new_fingerprints_past_the_cap_go_to_the_overflow_bucket_with_one_record(
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    now, t = clock(), tenant.tenant_id
    overflow = overflow_bucket_id(t)
    with session_factory() as session:
        for name in ("f1", "f2"):
            _bucket(session, t, bucket_id(t, name), name, now)
        session.commit()
        per_bucket, titles, events = _batch(t, ["f1", "f3", "f4"])
        kept, kept_titles = cap_new_buckets(
            session, t, per_bucket, titles, events, max_buckets=2, actor="device:d1", now=now
        )
        assert set(kept) == {bucket_id(t, "f1"), overflow}  # the existing bucket keeps counting
        assert sorted(kept[overflow]) == ["record of f3", "record of f4"]
        assert "overflow" in kept_titles[overflow][1]
        assert {e["name"]: e["bucket_id"] for e in events} == {"f1": bucket_id(t, "f1"), "f3": overflow, "f4": overflow}
        [note] = _records(session, t)
        assert (note.actor, note.target) == ("device:d1", f"bucket:{overflow}")
        assert "2 buckets" in note.detail
        _bucket(session, t, overflow, kept_titles[overflow][0], now)  # what ingest then creates
        session.commit()

        # Once the overflow bucket exists, more new fingerprints join it without a new record.
        per_bucket, titles, events = _batch(t, ["f5"])
        kept, _ = cap_new_buckets(session, t, per_bucket, titles, events, max_buckets=2, actor="device:d1", now=now)
        assert list(kept) == [overflow]
        assert events[0]["bucket_id"] == overflow
        session.commit()
        assert len(_records(session, t)) == 1

        # Another tenant has its own cap and its own overflow bucket.
        other = make_tenant("globex").tenant_id
        per_bucket, titles, events = _batch(other, ["f1", "f2"])
        kept, _ = cap_new_buckets(session, other, per_bucket, titles, events, max_buckets=2, actor="device:d2", now=now)
        assert set(kept) == {bucket_id(other, "f1"), bucket_id(other, "f2")}
        assert overflow_bucket_id(other) != overflow
        assert _records(session, other) == []


def test_under_the_cap_nothing_moves(
    tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    t = tenant.tenant_id
    with session_factory() as session:
        per_bucket, titles, events = _batch(t, ["a", "b", "c"])
        kept, kept_titles = cap_new_buckets(
            session, t, per_bucket, titles, events, max_buckets=3, actor="device:d1", now=clock()
        )
        assert kept == per_bucket
        assert kept_titles == titles
        assert [e["bucket_id"] for e in events] == [bucket_id(t, n) for n in ("a", "b", "c")]
        kept, _ = cap_new_buckets(session, t, per_bucket, titles, events, max_buckets=2, actor="device:d1", now=clock())
        assert set(kept) == {bucket_id(t, n) for n in sorted(["a", "b", "c"], key=lambda n: bucket_id(t, n))[:2]} | {
            overflow_bucket_id(t)
        }


def test_the_cap_is_a_named_setting_from_the_environment() -> None:
    assert ErrorReportSettings().max_buckets_per_tenant == 10_000
    assert ErrorReportSettings.from_env({"BASTION_ERROR_MAX_BUCKETS_PER_TENANT": "50"}).max_buckets_per_tenant == 50
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError):
            ErrorReportSettings.from_env({"BASTION_ERROR_MAX_BUCKETS_PER_TENANT": bad})


def test_ingest_applies_the_cap_end_to_end(
    *,
    app: FastAPI,
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """Signed batches over HTTP: past a cap of 2, new fingerprints count in the overflow bucket; no event is lost."""
    app.state.error_report_settings = ErrorReportSettings(max_buckets_per_tenant=2)
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())
    for names in (["A", "B", "C"], ["D"], ["A"]):
        records = [crash(clock(), exception=n) for n in names]
        r = client.post(ENDPOINT, content=batch(device, iat=clock(), records=records), headers=COSE)
        assert r.status_code == 200, r.text
    with session_factory() as session:
        buckets = {b.id: b for b in session.scalars(select(ErrorBucket))}
        assert len(buckets) == 3
        overflow = buckets[overflow_bucket_id(tenant.tenant_id)]
        assert overflow.event_count >= 2
        assert sum(b.event_count for b in buckets.values()) == 5
        assert len(_records(session, tenant.tenant_id)) == 1
        assert {e.bucket_id for e in session.scalars(select(ErrorEvent))} == set(buckets)
    items = client.get("/api/v1/error-reports/buckets", headers=bearer(tenant.admin_token)).json()["items"]
    assert any(i["title"].startswith("overflow") for i in items)
