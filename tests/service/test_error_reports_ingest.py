"""Error-report ingest: accepted batches make buckets, and every attack is refused, recorded, and changes nothing."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import cbor2
import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fleet_world import StatusDevice, make_status_device
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.crypto.keys import generate_private_key
from bastion.service.models import (
    AuditEvent,
    DeviceCertificate,
    DeviceReleaseActivity,
    ErrorBucket,
    ErrorBucketDevice,
    ErrorBucketVersion,
    ErrorBucketVersionDevice,
    ErrorEvent,
    ErrorReportBatch,
)
from bastion.service.ownership.repository import delete_device_dependents
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

STORED = (
    ErrorReportBatch,
    ErrorEvent,
    ErrorBucket,
    ErrorBucketVersion,
    ErrorBucketDevice,
    ErrorBucketVersionDevice,
    DeviceReleaseActivity,
)


def _post(client: TestClient, body: bytes) -> tuple[int, str]:
    r = client.post(ENDPOINT, content=body, headers=COSE)
    return r.status_code, r.json().get("error", "") if r.status_code != 200 else r.json()["status"]


def _counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {m.__tablename__: session.scalar(select(func.count()).select_from(m)) or 0 for m in STORED}


def _denials(sessions: sessionmaker[Session]) -> list[AuditEvent]:
    with sessions() as session:
        query = select(AuditEvent).where(AuditEvent.action == "device.error_report", AuditEvent.outcome == "denied")
        return list(session.scalars(query).all())


@pytest.fixture
def device(
    tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> StatusDevice:
    return make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())


def test_a_crash_makes_one_bucket_with_the_right_count(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    r = client.post(
        ENDPOINT, content=batch(device, iat=now, records=[crash(now, count=3), crash(now, line=9)]), headers=COSE
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "accepted"
    assert body["records"] == 2
    assert body["log_requests"] == []
    with session_factory() as session:
        buckets = session.scalars(select(ErrorBucket)).all()
        # The line number is not part of the fingerprint: both records are one bucket.
        assert len(buckets) == 1
        bucket = buckets[0]
        assert (bucket.event_count, bucket.device_count, bucket.state, bucket.algorithm) == (4, 1, "open", 1)
        assert bucket.title == "ZeroDivisionError in run (main.py)"
        assert session.scalar(select(func.count()).select_from(ErrorEvent)) == 2
        releases = {(a.component_id, a.version) for a in session.scalars(select(DeviceReleaseActivity))}
        assert releases == {("", "1.0.0"), ("app1", "1.0.0")}


def test_devices_are_counted_once_per_bucket_and_version(
    client: TestClient,
    *,
    device: StatusDevice,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """A device that crashes again is not a new device; a new version or another device is."""
    now = clock()
    other = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    sends = [
        (device, [crash(now), crash(now, line=7)]),  # one device, one version, twice in a batch
        (device, [crash(now)]),  # the same device and version, again
        (device, [crash(now, version="1.1.0"), crash(now)]),  # a new version of it, and the old one once more
        (other, [crash(now)]),  # another device, the first version
    ]
    for sender, records in sends:
        assert _post(client, batch(sender, iat=now, records=records)) == (200, "accepted")
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (bucket.event_count, bucket.device_count) == (6, 2)
        versions = {v.version: (v.event_count, v.device_count) for v in session.scalars(select(ErrorBucketVersion))}
        assert versions == {"1.0.0": (5, 2), "1.1.0": (1, 1)}
        per_device = {d.device_id: d.event_count for d in session.scalars(select(ErrorBucketDevice))}
        assert per_device == {device.device_id: 5, other.device_id: 1}


def test_an_empty_batch_is_a_heartbeat(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    assert _post(client, batch(device, iat=clock(), installed=[("app1", "2.0.0")])) == (200, "accepted")
    counts = _counts(session_factory)
    assert counts["error_report_batches"] == 1
    assert counts["error_events"] == 0
    assert counts["device_release_activity"] == 2


def test_fingerprints_split_by_kind(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    t = int(now.timestamp())
    base: dict[str, Any] = {
        "event_class": "Error",
        "component_id": "app1",
        "version": "1.0.0",
        "count": 1,
        "first_at": t,
        "last_at": t,
        "description": "",
    }
    records = [
        crash(now, exception="KeyError"),
        crash(now, function="other"),
        {**base, "category": "AppCrash", "event_type": "signal", "signal": 11},
        {**base, "category": "AppCrash", "event_type": "signal", "signal": 11, "version": "1.0.1"},
        {**base, "category": "Security", "event_type": "capability_denied", "capability": "Gpio"},
        {**base, "category": "Security", "event_type": "capability_denied", "capability": "Gpio", "version": "2.0.0"},
        {**base, "category": "OS", "event_type": "boot", "component_id": "", "event_class": "Info", "reason": "power"},
    ]
    assert _post(client, batch(device, iat=now, records=records)) == (200, "accepted")
    with session_factory() as session:
        # KeyError, other function, signal 1.0.0, signal 1.0.1, one security bucket over versions, the boot.
        assert session.scalar(select(func.count()).select_from(ErrorBucket)) == 6


def test_a_replayed_batch_counts_once(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    body = batch(device, iat=now, records=[crash(now)])
    assert _post(client, body) == (200, "accepted")
    before = _counts(session_factory)
    assert _post(client, body) == (200, "duplicate")
    assert _counts(session_factory) == before
    with session_factory() as session:
        assert session.scalars(select(ErrorBucket.event_count)).one() == 1


def test_concurrent_copies_of_one_batch_count_once(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    body = batch(device, iat=now, records=[crash(now)])
    results: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: results.append(_post(client, body))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(200, "accepted")] + [(200, "duplicate")] * 3
    with session_factory() as session:
        assert session.scalars(select(ErrorBucket.event_count)).one() == 1
        assert session.scalar(select(func.count()).select_from(ErrorReportBatch)) == 1


def test_a_regression_reopens_a_resolved_bucket(
    client: TestClient,
    tenant: CreatedTenant,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    now = clock()
    assert _post(client, batch(device, iat=now, records=[crash(now, version="1.0.0")])) == (200, "accepted")
    with session_factory() as session:
        bucket_id = session.scalars(select(ErrorBucket.id)).one()
    r = client.post(f"/api/v1/error-reports/buckets/{bucket_id}/resolve", headers=bearer(tenant.admin_token))
    assert r.status_code == 200
    assert r.json()["state"] == "resolved"
    assert r.json()["resolved_version"] == "1.0.0"
    # The same version again (an old device not yet updated) does not reopen it ...
    assert _post(client, batch(device, iat=now, records=[crash(now, version="1.0.0")])) == (200, "accepted")
    r = client.get(f"/api/v1/error-reports/buckets/{bucket_id}", headers=bearer(tenant.admin_token))
    assert r.json()["bucket"]["state"] == "resolved"
    # ... a newer version does.
    assert _post(client, batch(device, iat=now, records=[crash(now, version="1.1.0")])) == (200, "accepted")
    r = client.get(f"/api/v1/error-reports/buckets/{bucket_id}", headers=bearer(tenant.admin_token))
    detail = r.json()
    assert detail["bucket"]["state"] == "regressed"
    assert detail["bucket"]["event_count"] == 3
    assert {v["version"]: v["event_count"] for v in detail["versions"]} == {"1.0.0": 2, "1.1.0": 1}
    with session_factory() as session:
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "error_report.regressed")).all()


# --- attacks: each refused, nothing stored changes, and a record exists ---------------------


def _refused(client: TestClient, sessions: sessionmaker[Session], body: bytes, expected: tuple[int, str]) -> None:
    """Refused, nothing stored changed, and one more record (each call a refusal window later)."""
    client.app.state.clock.advance(dt.timedelta(seconds=61))  # type: ignore[attr-defined]
    before = _counts(sessions)
    denials = len(_denials(sessions))
    assert _post(client, body) == expected
    assert _counts(sessions) == before
    assert len(_denials(sessions)) == denials + 1, "the refusal is recorded"


def test_forged_reports_are_refused(
    *,
    client: TestClient,
    tenant: CreatedTenant,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    _refused(
        client,
        session_factory,
        batch(device, iat=now, records=[crash(now)], key=generate_private_key()),
        (403, "bad_signature"),
    )
    # Signed by another (genuine) device's key, under this device's certificate.
    other = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    _refused(
        client, session_factory, batch(device, iat=now, records=[crash(now)], key=other.key), (403, "bad_signature")
    )


def test_a_report_for_another_device_is_refused(
    *,
    client: TestClient,
    tenant: CreatedTenant,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    other = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    _refused(
        client,
        session_factory,
        batch(device, iat=now, device_id=other.device_id, records=[crash(now)]),
        (403, "device_mismatch"),
    )


def test_an_oversized_report_is_refused(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    big = [crash(now) | {"stderr_tail": "x" * 2000, "description": "y" * 256} for _ in range(40)]
    body = batch(device, iat=now, records=big)
    assert len(body) > 64 * 1024
    _refused(client, session_factory, body, (413, "report_too_large"))


def test_reports_from_a_revoked_device_or_certificate_are_refused(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    revoked = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    assert (
        client.post(f"/api/v1/devices/{revoked.device_id}/revoke", headers=bearer(tenant.admin_token)).status_code
        == 200
    )
    _refused(client, session_factory, batch(revoked, iat=now, records=[crash(now)]), (403, "device_revoked"))


def test_a_report_under_a_revoked_certificate_is_refused(
    client: TestClient,
    tenant: CreatedTenant,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    now = clock()
    with session_factory() as session:
        session.add(
            DeviceCertificate(
                ca_id=1,
                tenant_id=tenant.tenant_id,
                device_id=device.device_id,
                serial=format(device.cert.serial_number, "x"),
                issued_at=now,
                not_after=now + dt.timedelta(hours=24),
                revoked_at=now,
                revocation_reason="privilege_withdrawn",
            )
        )
        session.commit()
    _refused(client, session_factory, batch(device, iat=now, records=[crash(now)]), (403, "certificate_revoked"))


def test_unclaimed_and_expired_devices_are_refused(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    unclaimed = make_status_device(
        session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now, claimed=False
    )
    _refused(client, session_factory, batch(unclaimed, iat=now), (403, "unknown_device"))
    device = make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
    clock.advance(dt.timedelta(hours=25))
    _refused(client, session_factory, batch(device, iat=clock()), (403, "certificate_expired"))


@pytest.mark.parametrize(
    "change",
    [
        {"records": [{"category": "Bogus"}]},
        {"records": [{"event_class": None}]},
        {"records": "many"},
        {"batch_id": "zz"},
        {"v": 2},
        {"dropped": -1},
        {"dropped": 2**64},
        {"records": [{"count": 2**63}]},
        {"records": [{"count": 0}]},
        {"records": [{"first_at": 100, "last_at": 99}]},
        {"records": [{"last_at": 2**62}]},
        {"records": [{"first_at": -5}]},
        {"records": [{"event_type": "Has Spaces"}]},
        {"records": [{"frames": [{"file": "x" * 200, "function": "f", "line": 1}]}]},
        {"installed": [{"component_id": 5, "version": "1"}]},
        {"boot_slot": "c"},
    ],
)
def test_malformed_batches_are_400(
    client: TestClient,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    change: dict[str, Any],
) -> None:
    now = clock()
    if isinstance(change.get("records"), list):
        change = {"records": [crash(now) | change["records"][0]]}
    body = batch(device, iat=now, override=change)
    _refused(client, session_factory, body, (400, "malformed_report"))


def test_bad_times_and_bytes_are_400(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    _refused(client, session_factory, batch(device, iat=now - dt.timedelta(days=31)), (400, "malformed_report"))
    _refused(client, session_factory, batch(device, iat=now + dt.timedelta(hours=1)), (400, "malformed_report"))
    _refused(client, session_factory, b"\xa0", (400, "malformed_report"))
    not_cbor = sign1(b"\xff\x00garbage", device.key, x5chain=[certificate_der(device.cert)])
    _refused(client, session_factory, not_cbor, (400, "malformed_report"))
    no_chain = sign1(cbor2.dumps({"v": 1}), device.key)
    _refused(client, session_factory, no_chain, (400, "malformed_report"))
    r = client.post(ENDPOINT, content=batch(device, iat=now), headers={"Content-Type": "application/json"})
    assert r.status_code == 415


def test_refusals_of_one_device_are_bounded(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    now = clock()
    for _ in range(5):
        assert _post(client, batch(device, iat=now, key=generate_private_key())) == (403, "bad_signature")
    assert len(_denials(session_factory)) == 1


def test_a_status_report_counts_as_seen(
    client: TestClient, device: StatusDevice, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    r = client.post(
        "/api/v1/device/status", content=device.report(iat=clock(), installed=[("app1", "3.0.0")]), headers=COSE
    )
    assert r.status_code == 200, r.text
    with session_factory() as session:
        releases = {(a.component_id, a.version) for a in session.scalars(select(DeviceReleaseActivity))}
    assert releases == {("", "1.0.0"), ("app1", "3.0.0")}


def test_unclaim_deletes_the_devices_error_rows(
    client: TestClient,
    tenant: CreatedTenant,
    device: StatusDevice,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    now = clock()
    assert _post(client, batch(device, iat=now, records=[crash(now)])) == (200, "accepted")
    with session_factory() as session:
        delete_device_dependents(session, device.device_id)
        session.commit()
    counts = _counts(session_factory)
    assert counts["error_events"] == counts["error_report_batches"] == counts["device_release_activity"] == 0
    assert counts["error_bucket_devices"] == counts["error_bucket_version_devices"] == 0
    assert counts["error_buckets"] == 1


def test_the_answer_hands_out_pending_log_requests(
    client: TestClient, tenant: CreatedTenant, device: StatusDevice, clock: FakeClock
) -> None:
    asked = client.post(
        f"/api/v1/devices/{device.device_id}/log-requests",
        json={"component_id": "app1"},
        headers=bearer(tenant.admin_token),
    )
    assert asked.status_code == 201, asked.text
    r = client.post(ENDPOINT, content=batch(device, iat=clock()), headers=COSE)
    assert r.status_code == 200, r.text
    (request,) = r.json()["log_requests"]
    assert request["component_id"] == "app1"
    assert request["max_bytes"] > 0
    assert request["request_id"] == asked.json()["request_id"]


def test_ingest_outcomes_are_counted_in_the_metrics(client: TestClient, device: StatusDevice, clock: FakeClock) -> None:
    from bastion.service import metrics

    def seen(status: str) -> float:
        return metrics.ERROR_REPORTS_INGESTED.labels(status=status)._value.get()  # type: ignore[attr-defined,no-any-return]

    before = {s: seen(s) for s in ("accepted", "duplicate", "refused")}
    records_before = metrics.ERROR_REPORT_RECORDS._value.get()  # type: ignore[attr-defined]
    body = batch(device, iat=clock(), records=[crash(clock()), crash(clock()) | {"event_type": "other"}])
    assert _post(client, body)[0] == 200
    assert _post(client, body)[0] == 200
    assert _post(client, b"\xa0")[0] == 400
    assert {s: seen(s) - before[s] for s in before} == {"accepted": 1, "duplicate": 1, "refused": 1}
    assert metrics.ERROR_REPORT_RECORDS._value.get() - records_before == 2  # type: ignore[attr-defined]
