"""The operator's error-report API: list with filters and a cursor, show, resolve (roles), download, retention."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fleet_world import StatusDevice, make_status_device
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.errorreports.limits import ErrorReportSettings
from bastion.service.errorreports.retention import prune_once
from bastion.service.errorreports.service import CSV_COLUMNS
from bastion.service.models import ErrorDailyCount, ErrorEvent, ErrorReportBatch
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

API = "/api/v1/error-reports"


def _token(client: TestClient, admin: str, role: str) -> str:
    r = client.post("/api/v1/tokens", json={"name": f"{role} bot", "role": role}, headers=bearer(admin))
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture
def device(
    tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> StatusDevice:
    return make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())


@pytest.fixture
def send(client: TestClient, device: StatusDevice, clock: FakeClock) -> Callable[..., None]:
    def _send(*records: dict[str, object], os_version: str = "1.0.0") -> None:
        r = client.post(
            ENDPOINT, content=batch(device, iat=clock(), records=records, os_version=os_version), headers=COSE
        )
        assert r.status_code == 200, r.text

    return _send


def test_list_filters_and_pages_with_a_cursor(
    client: TestClient, tenant: CreatedTenant, send: Callable[..., None], clock: FakeClock
) -> None:
    now = clock()
    for i in range(5):
        send(crash(now + dt.timedelta(seconds=i), exception=f"E{i}", component="app1" if i % 2 else "app2"))
    auth = bearer(tenant.admin_token)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = client.get(f"{API}/buckets", params=params, headers=auth)
        assert r.status_code == 200, r.text
        seen += [b["title"].split()[0] for b in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["E4", "E3", "E2", "E1", "E0"]  # newest last_seen first, each once
    r = client.get(f"{API}/buckets", params={"component": "app1"}, headers=auth)
    assert {b["title"].split()[0] for b in r.json()["items"]} == {"E1", "E3"}
    assert client.get(f"{API}/buckets", params={"version": "9.9.9"}, headers=auth).json()["items"] == []
    assert len(client.get(f"{API}/buckets", params={"state": "open"}, headers=auth).json()["items"]) == 5
    assert client.get(f"{API}/buckets", params={"state": "nope"}, headers=auth).status_code in (400, 422)
    assert client.get(f"{API}/buckets", params={"cursor": "!!!"}, headers=auth).status_code == 400
    assert client.get(f"{API}/buckets", params={"limit": 10_000}, headers=auth).status_code in (400, 422)


def test_show_and_resolve_by_role_and_tenant(
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    send: Callable[..., None],
    clock: FakeClock,
) -> None:
    send(crash(clock(), count=2))
    auth = bearer(tenant.admin_token)
    bucket_id = client.get(f"{API}/buckets", headers=auth).json()["items"][0]["bucket_id"]
    detail = client.get(f"{API}/buckets/{bucket_id}", headers=auth).json()
    assert detail["bucket"]["event_count"] == 2
    assert len(detail["devices"]) == 1
    assert len(detail["recent_events"]) == 1
    assert detail["recent_events"][0]["detail"]["exception"] == "ZeroDivisionError"
    reader = bearer(_token(client, tenant.admin_token, "reader"))
    assert client.get(f"{API}/buckets/{bucket_id}", headers=reader).status_code == 200
    r = client.post(f"{API}/buckets/{bucket_id}/resolve", headers=reader)
    assert r.status_code == 403
    contributor = bearer(_token(client, tenant.admin_token, "contributor"))
    assert client.post(f"{API}/buckets/{bucket_id}/resolve", headers=contributor).json()["state"] == "resolved"
    other = bearer(make_tenant("other").admin_token)
    assert client.get(f"{API}/buckets/{bucket_id}", headers=other).status_code == 404
    assert client.post(f"{API}/buckets/{bucket_id}/resolve", headers=other).status_code == 404
    assert client.get(f"{API}/buckets", headers=other).json()["items"] == []


def test_download_csv_and_json(
    client: TestClient, tenant: CreatedTenant, device: StatusDevice, send: Callable[..., None], clock: FakeClock
) -> None:
    now = clock()
    send(crash(now - dt.timedelta(hours=2), count=3), os_version="2.0.0")
    send(crash(now, exception="KeyError"))  # records are not after their batch (times are held to its window)
    auth = bearer(tenant.admin_token)
    r = client.get(f"{API}/download", params={"format": "csv"}, headers=auth)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first["DeviceId"] == device.device_id
    assert first["EventCount"] == "3"
    assert first["OsVersion"] == "2.0.0"
    assert first["EventCategory"] == "AppCrash"
    assert first["Bucket"].startswith("b")
    until = (now - dt.timedelta(hours=1)).isoformat()
    r = client.get(f"{API}/download", params={"format": "json", "until": until}, headers=auth)
    items = r.json()
    assert [i["EventCount"] for i in items] == [3]
    bad = client.get(f"{API}/download", params={"format": "json", "since": until, "until": until}, headers=auth)
    assert bad.status_code == 400
    assert client.get(f"{API}/download", params={"format": "xml"}, headers=auth).status_code in (400, 422)


def test_retention_rolls_old_events_up_and_forgets_old_batch_ids(
    send: Callable[..., None], session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    send(crash(now, count=4), crash(now, exception="KeyError"))
    settings = ErrorReportSettings(event_retention=dt.timedelta(days=1), batch_retention=dt.timedelta(days=2))
    with session_factory() as session:
        assert prune_once(session, now=now, settings=settings).events_rolled_up == 0
    with session_factory() as session:
        pruned = prune_once(session, now=now + dt.timedelta(days=1, seconds=1), settings=settings)
        assert pruned.events_rolled_up == 2
        assert pruned.batches_deleted == 0
        assert session.scalar(select(func.count()).select_from(ErrorEvent)) == 0
        daily = session.scalars(select(ErrorDailyCount)).all()
        assert sorted(d.events for d in daily) == [1, 4]
        assert {d.devices for d in daily} == {1}
    with session_factory() as session:
        assert prune_once(session, now=now + dt.timedelta(days=3), settings=settings).batches_deleted == 1
        assert session.scalar(select(func.count()).select_from(ErrorReportBatch)) == 0
    with session_factory() as session:
        assert prune_once(session, now=now + dt.timedelta(days=500), settings=settings).daily_deleted == 2


def test_retention_settings_come_from_the_environment() -> None:
    settings = ErrorReportSettings.from_env({"BASTION_ERROR_EVENT_RETENTION_DAYS": "7"})
    assert settings.event_retention == dt.timedelta(days=7)
    # Batch IDs always outlive the iat window, so a replay is never counted twice.
    short = ErrorReportSettings.from_env({"BASTION_ERROR_BATCH_RETENTION_DAYS": "1"})
    assert short.batch_retention > short.max_batch_age
    from bastion.service.errors import ConfigError

    with pytest.raises(ConfigError):
        ErrorReportSettings.from_env({"BASTION_ERROR_DAILY_RETENTION_DAYS": "soon"})
