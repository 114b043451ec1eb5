"""Group commit of error reports (ADR 0028): a group stores what its batches stored one by one would.

Each test builds a group and calls :func:`ingest.accept_group` (or the app's
:class:`IngestQueue`) directly; the reference is the same batches through
:func:`ingest.accept_batch`, one after the other, in a second tenant.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fleet_world import StatusDevice
from group_world import Answer, claimed_devices, count_rows, new_queue, queue_statuses, statuses
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports import bucket_counts, ingest, ingest_queue, store
from bastion.service.errorreports.bucket_cap import CAP_ACTION, overflow_bucket_id
from bastion.service.errorreports.fingerprint import bucket_id as fingerprint_bucket_id
from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS, ErrorReportSettings
from bastion.service.errorreports.retention import prune_once
from bastion.service.errors import Forbidden
from bastion.service.models import (
    AuditEvent,
    Device,
    ErrorBucket,
    ErrorBucketDevice,
    ErrorBucketVersion,
    ErrorBucketVersionDevice,
    ErrorEvent,
    ErrorReportBatch,
)
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient


def _group(
    sessions: sessionmaker[Session],
    bodies: Sequence[bytes],
    now: dt.datetime,
    *,
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
    refusals: RefusalLog | None = None,
) -> list[Answer]:
    with sessions() as session:
        return ingest.accept_group(
            session, [(b, now) for b in bodies], refusals=refusals or RefusalLog(), settings=settings
        )


def _one_by_one(
    sessions: sessionmaker[Session],
    bodies: Sequence[bytes],
    now: dt.datetime,
    *,
    settings: ErrorReportSettings = DEFAULT_ERROR_REPORT_SETTINGS,
) -> list[str]:
    out = []
    for body in bodies:
        with sessions() as session:
            out.append(ingest.accept_batch(session, body, now=now, refusals=RefusalLog(), settings=settings).status)
    return out


def _picture(sessions: sessionmaker[Session], tenant_id: str, devices: Sequence[StatusDevice]) -> dict[str, Any]:
    """A tenant's buckets, by fingerprint, with its devices named by their index in ``devices``."""
    name = {d.device_id: n for n, d in enumerate(devices)}
    with sessions() as session:
        buckets = session.scalars(select(ErrorBucket).where(ErrorBucket.tenant_id == tenant_id)).all()
        out: dict[str, Any] = {}
        for b in buckets:
            versions = session.scalars(select(ErrorBucketVersion).where(ErrorBucketVersion.bucket_id == b.id)).all()
            per_device = session.scalars(select(ErrorBucketDevice).where(ErrorBucketDevice.bucket_id == b.id)).all()
            events = session.scalar(select(func.count()).select_from(ErrorEvent).where(ErrorEvent.bucket_id == b.id))
            out[b.fingerprint] = {
                "bucket": (b.event_count, b.device_count, b.state, b.first_version, b.last_version, b.first_seen),
                "versions": {v.version: (v.event_count, v.device_count, v.first_seen, v.last_seen) for v in versions},
                "devices": {name[d.device_id]: (d.event_count, d.first_seen, d.last_seen) for d in per_device},
                "events": events,
            }
        return out


def _spy_count_in(
    monkeypatch: pytest.MonkeyPatch, fault: Callable[[int], Exception | None] = lambda _: None
) -> list[int]:
    """Put a spy on the store's count_in: the contributions of each call are counted into the list returned,
    and a call of ``n`` raises ``fault(n)`` when that is an exception."""
    real = bucket_counts.count_in
    sizes: list[int] = []

    def spy(session: Session, contributions: Sequence[bucket_counts.Contribution]) -> list[dict[str, str]]:
        sizes.append(len(contributions))
        error = fault(len(contributions))
        if error is not None:
            raise error
        return real(session, contributions)

    monkeypatch.setattr(store, "count_in", spy)
    return sizes


def _denials(sessions: sessionmaker[Session]) -> int:
    return count_rows(sessions, AuditEvent, AuditEvent.action == "device.error_report", AuditEvent.outcome == "denied")


def _sends(devices: Sequence[StatusDevice], now: dt.datetime) -> list[bytes]:
    """Batches of three devices: several for one bucket, two of device 0, versions old and new."""
    d0, d1, d2 = devices
    later = now + dt.timedelta(minutes=1)
    return [
        batch(d0, iat=now, records=[crash(now), crash(now, line=7), crash(now, exception="KeyError")]),
        batch(d1, iat=now, records=[crash(now, count=3)]),
        batch(d0, iat=later, records=[crash(later, version="1.1.0"), crash(later)]),  # device 0 again
        batch(d2, iat=now, records=[crash(now, version="1.1.0"), crash(now, exception="KeyError", version="0.9.0")]),
        batch(d1, iat=later, installed=[("app1", "2.0.0")]),  # a heartbeat
        batch(d2, iat=later, records=[crash(later, function="other", count=5)]),
    ]


def test_a_group_counts_as_its_batches_one_by_one(
    *,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    other = make_tenant("globex")
    grouped = claimed_devices(session_factory, tenant, clock, 3, master_key)
    alone = claimed_devices(session_factory, other, clock, 3, master_key)
    assert statuses(_group(session_factory, _sends(grouped, now), now)) == ["accepted"] * 6
    assert _one_by_one(session_factory, _sends(alone, now), now) == ["accepted"] * 6
    picture = _picture(session_factory, tenant.tenant_id, grouped)
    assert picture == _picture(session_factory, other.tenant_id, alone)
    # And what that is: the ZeroDivisionError bucket, one device counted once however many of its batches.
    (zero,) = [p for p in picture.values() if p["events"] == 6]
    assert zero["bucket"][:5] == (2 + 3 + 2 + 1, 3, "open", "1.0.0", "1.1.0")
    assert {v: c[:2] for v, c in zero["versions"].items()} == {"1.0.0": (6, 2), "1.1.0": (2, 2)}
    assert {d: c[0] for d, c in zero["devices"].items()} == {0: 4, 1: 3, 2: 1}
    assert count_rows(session_factory, ErrorReportBatch, ErrorReportBatch.tenant_id == tenant.tenant_id) == 6


def test_a_batch_twice_in_a_group_and_one_already_stored_count_once(
    *, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    now = clock()
    d0, d1 = claimed_devices(session_factory, tenant, clock, 2, master_key)
    stored = batch(d0, iat=now, records=[crash(now)])
    assert _one_by_one(session_factory, [stored], now) == ["accepted"]
    twice = batch(d1, iat=now, records=[crash(now, count=2)])
    fresh = batch(d0, iat=now, records=[crash(now, count=4)])
    answers = _group(session_factory, [twice, stored, twice, fresh, stored], now)
    assert statuses(answers) == ["accepted", "duplicate", "duplicate", "accepted", "duplicate"]
    assert count_rows(session_factory, ErrorReportBatch) == 3
    assert count_rows(session_factory, ErrorEvent) == 3
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (bucket.event_count, bucket.device_count) == (1 + 2 + 4, 2)
        version = session.scalars(select(ErrorBucketVersion)).one()
        assert (version.event_count, version.device_count) == (7, 2)


def test_a_refused_batch_in_a_group_is_refused_alone(
    *, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    now = clock()
    d0, d1, revoked = claimed_devices(session_factory, tenant, clock, 3, master_key)
    with session_factory() as session:
        device = session.get(Device, revoked.device_id)
        assert device is not None
        device.revoked_at = now
        session.commit()
    denials = _denials(session_factory)
    bodies = [
        batch(d0, iat=now, records=[crash(now)]),
        batch(d0, iat=now, records=[crash(now, count=50)], key=generate_private_key()),  # forged
        batch(d0, iat=now, records=[crash(now, count=60)], device_id=d1.device_id),  # for another device
        batch(revoked, iat=now, records=[crash(now, count=70)]),
        batch(d1, iat=now, records=[crash(now, count=2)]),
    ]
    answers = _group(session_factory, bodies, now)
    assert statuses(answers) == ["accepted", "bad_signature", "device_mismatch", "device_revoked", "accepted"]
    assert all(isinstance(a, Forbidden) for a in answers[1:4])
    assert _denials(session_factory) == denials + 3
    assert count_rows(session_factory, ErrorReportBatch) == 2
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (bucket.event_count, bucket.device_count) == (3, 2)
        assert {d.device_id for d in session.scalars(select(ErrorBucketDevice))} == {d0.device_id, d1.device_id}


def test_a_newer_version_in_a_group_regresses_a_resolved_bucket_once(
    *, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    now = clock()
    d0, d1, d2 = claimed_devices(session_factory, tenant, clock, 3, master_key)
    assert _one_by_one(session_factory, [batch(d0, iat=now, records=[crash(now, version="1.0.0")])], now)
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        bucket.state, bucket.resolved_version, bucket.resolved_at = "resolved", "1.0.0", now
        session.commit()
    later = now + dt.timedelta(minutes=5)
    bodies = [
        batch(d0, iat=later, records=[crash(later, version="1.0.0")]),  # an old device: no regression
        batch(d1, iat=later, records=[crash(later, version="1.1.0")]),
        batch(d2, iat=later, records=[crash(later, version="1.2.0")]),
        batch(d1, iat=later, records=[crash(later, version="1.1.0", line=8)]),
    ]
    assert statuses(_group(session_factory, bodies, later)) == ["accepted"] * 4
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (bucket.state, bucket.regressed_at, bucket.event_count) == ("regressed", later, 5)
        audits = session.scalars(select(AuditEvent).where(AuditEvent.action == "error_report.regressed")).all()
        assert len(audits) == 1
        assert audits[0].tenant_id == tenant.tenant_id
        assert audits[0].target == f"bucket:{bucket.id}"


def test_a_group_that_meets_a_conflict_stores_each_batch_once(
    *,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = clock()
    other = make_tenant("globex")
    grouped = claimed_devices(session_factory, tenant, clock, 3, master_key)
    alone = claimed_devices(session_factory, other, clock, 3, master_key)
    groups = _spy_count_in(  # every batch of a group collides
        monkeypatch, lambda n: bucket_counts.GroupConflictError(frozenset(range(n))) if n > 1 else None
    )
    bodies = _sends(grouped, now)
    answers = _group(session_factory, [*bodies, bodies[1]], now)  # and a copy: still a duplicate
    assert statuses(answers) == ["accepted"] * 6 + ["duplicate"]
    assert groups == [6, 1, 1, 1, 1, 1, 1]  # the group, then each fresh batch alone (the copy stores nothing)
    monkeypatch.setattr(store, "count_in", bucket_counts.count_in)
    _one_by_one(session_factory, _sends(alone, now), now)
    assert _picture(session_factory, tenant.tenant_id, grouped) == _picture(session_factory, other.tenant_id, alone)
    assert count_rows(session_factory, ErrorReportBatch, ErrorReportBatch.tenant_id == tenant.tenant_id) == 6


def test_a_bucket_id_of_another_tenant_sends_only_its_batches_alone(
    *,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device whose fingerprint's ID is another tenant's bucket: that bucket is untouched, nothing is lost,
    and the group's other batches are still stored together (a found collision must not slow every group)."""
    now = clock()
    groups = _spy_count_in(monkeypatch)
    victim = make_tenant("globex")
    d0, d1, d2 = claimed_devices(session_factory, tenant, clock, 3, master_key)
    colliding = batch(d0, iat=now, records=[crash(now, exception="Collide")])
    with session_factory() as session:
        checked = ingest.check_batch(session, colliding, now=now, refusals=RefusalLog())
        ((bid, (fp, _)),) = checked.titles.items()
        _foreign_bucket(session, bid, victim.tenant_id, "f" * 64, now)
        session.commit()
    bodies = [
        batch(d1, iat=now, records=[crash(now)]),
        colliding,
        batch(d2, iat=now, records=[crash(now, exception="Collide"), crash(now, count=2)]),
        batch(d1, iat=now, records=[crash(now)]),
    ]
    assert statuses(_group(session_factory, bodies, now)) == ["accepted"] * 4
    assert groups == [4, 1, 1, 2]  # the group; the two with the colliding ID alone; the other two together
    with session_factory() as session:
        foreign = session.get(ErrorBucket, bid)
        assert foreign is not None
        assert (foreign.tenant_id, foreign.event_count, foreign.device_count) == (victim.tenant_id, 7, 1)
        assert not session.scalars(select(ErrorEvent).where(ErrorEvent.bucket_id == bid)).all()
        home = session.scalars(
            select(ErrorBucket).where(ErrorBucket.tenant_id == tenant.tenant_id, ErrorBucket.fingerprint == fp)
        ).one()
        assert home.id != bid
        assert (home.event_count, home.device_count) == (2, 2)
        zero = session.scalars(
            select(ErrorBucket).where(ErrorBucket.tenant_id == tenant.tenant_id, ErrorBucket.fingerprint != fp)
        ).one()
        assert (zero.event_count, zero.device_count) == (4, 2)
    assert count_rows(session_factory, ErrorReportBatch) == 4
    assert count_rows(session_factory, ErrorEvent) == 5


def _foreign_bucket(session: Session, bid: str, tenant_id: str, fp: str, now: dt.datetime) -> None:
    session.add(
        ErrorBucket(
            id=bid,
            tenant_id=tenant_id,
            fingerprint=fp,
            algorithm=1,
            category="AppCrash",
            event_type="python_exception",
            component_id="app1",
            title="the victim's",
            state="open",
            first_seen=now,
            last_seen=now,
            event_count=7,
            device_count=1,
            first_version="1.0.0",
            last_version="1.0.0",
        )
    )


def test_a_batch_refused_at_store_time_does_not_answer_for_the_others(
    *,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """The one fresh batch of a group is refused when storing it (every other ID of its bucket is taken).

    Its refusal is its own: the group's duplicate and refused batches keep their answers.
    """
    now = clock()
    victim = make_tenant("globex")
    hostile, honest = claimed_devices(session_factory, tenant, clock, 2, master_key)
    stored = batch(honest, iat=now, records=[crash(now)])
    assert _one_by_one(session_factory, [stored], now) == ["accepted"]
    colliding = batch(hostile, iat=now, records=[crash(now, exception="Collide")])
    with session_factory() as session:
        checked = ingest.check_batch(session, colliding, now=now, refusals=RefusalLog())
        ((bid, (fp, _)),) = checked.titles.items()
        taken = [bid] + [fingerprint_bucket_id(tenant.tenant_id, f"{fp}#{n}") for n in range(1, 5)]
        for n, other in enumerate(taken):
            _foreign_bucket(session, other, victim.tenant_id, f"{n:x}" * 64, now)
        session.commit()
    forged = batch(honest, iat=now, records=[crash(now)], key=generate_private_key())
    answers = _group(session_factory, [stored, colliding, forged], now)
    assert statuses(answers) == ["duplicate", "malformed_report", "bad_signature"]
    assert count_rows(session_factory, ErrorReportBatch) == 1


def test_the_ingest_queue_answers_each_batch_of_its_groups(
    *,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten batches waiting for one thread: a group of eight, then one of two; each its own answer."""
    now = clock()
    devices = claimed_devices(session_factory, tenant, clock, 4, master_key)
    bodies = [batch(devices[n % 4], iat=now, records=[crash(now, count=n + 1)]) for n in range(8)]
    forged = batch(devices[0], iat=now, records=[crash(now, count=100)], key=generate_private_key())
    bodies[3:3] = [forged]
    bodies.append(bodies[0])  # a copy in the second group
    sizes: list[int] = []
    real = ingest.accept_group

    def spy(session: Session, group: Sequence[tuple[bytes, dt.datetime]], **kw: Any) -> list[Answer]:
        sizes.append(len(group))
        return real(session, group, **kw)

    monkeypatch.setattr(ingest, "accept_group", spy)
    answers = queue_statuses(new_queue(session_factory), bodies, now)
    assert sizes == [8, 2]
    assert answers == ["accepted"] * 3 + ["bad_signature"] + ["accepted"] * 5 + ["duplicate"]
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (bucket.event_count, bucket.device_count) == (sum(range(1, 9)), 4)
    assert count_rows(session_factory, ErrorReportBatch) == 8


def test_concurrent_posts_are_each_counted_once(
    *,
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    devices = claimed_devices(session_factory, tenant, clock, 5, master_key)
    distinct = [batch(devices[n % 5], iat=now, records=[crash(now, count=n + 1)]) for n in range(24)]
    bodies = distinct + distinct[:6]  # and six copies, racing their originals
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def post(body: bytes) -> None:
        r = client.post(ENDPOINT, content=body, headers=COSE)
        with lock:
            results.append((r.status_code, r.json().get("status", r.text)))

    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == sorted([(200, "accepted")] * 24 + [(200, "duplicate")] * 6)
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (bucket.event_count, bucket.device_count) == (sum(range(1, 25)), 5)
        per_device = {d.device_id: d.event_count for d in session.scalars(select(ErrorBucketDevice))}
        assert per_device == {d.device_id: sum(range(n + 1, 25, 5)) for n, d in enumerate(devices)}
    assert count_rows(session_factory, ErrorReportBatch) == 24
    assert count_rows(session_factory, ErrorEvent) == 24


# --- a hostile device in the group -----------------------------------------------------------


def test_the_bucket_cap_holds_within_a_group_and_is_audited_once(
    *, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    """Past the cap, a group's new fingerprints go to the overflow bucket, and the cap is audited once."""
    now = clock()
    settings = ErrorReportSettings(max_buckets_per_tenant=2)
    devices = claimed_devices(session_factory, tenant, clock, 3, master_key)
    assert _one_by_one(session_factory, [batch(devices[0], iat=now, records=[crash(now)])], now, settings=settings)
    bodies = [
        batch(d, iat=now, records=[crash(now, exception=f"E{n}x{m}") for m in range(3)]) for n, d in enumerate(devices)
    ]
    assert statuses(_group(session_factory, bodies, now, settings=settings)) == ["accepted"] * 3
    overflow = overflow_bucket_id(tenant.tenant_id)
    tenant_buckets = ErrorBucket.tenant_id == tenant.tenant_id
    # At most one group's worth past the cap (bucket_cap's docstring): here, one batch's room each.
    assert count_rows(session_factory, ErrorBucket, tenant_buckets, ErrorBucket.id != overflow) <= 2 + len(bodies) - 1
    assert count_rows(session_factory, AuditEvent, AuditEvent.action == CAP_ACTION) == 1
    # The next group opens nothing more.
    before = count_rows(session_factory, ErrorBucket, tenant_buckets)
    more = [batch(d, iat=now, records=[crash(now, exception=f"F{n}")]) for n, d in enumerate(devices)]
    assert statuses(_group(session_factory, more, now, settings=settings)) == ["accepted"] * 3
    assert count_rows(session_factory, ErrorBucket, tenant_buckets) == before
    assert count_rows(session_factory, AuditEvent, AuditEvent.action == CAP_ACTION) == 1


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_copies_in_another_order_do_not_fail_the_other_devices_batches(
    *,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    engine: Engine,
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """A device that sends copies of its batches in another order into concurrent groups.

    Two groups that insert the same batch rows in opposite orders wait on each other
    (ON CONFLICT waits for the other transaction's row): PostgreSQL ends one with a
    deadlock error, and every batch of that group, the honest devices' too, would fail.
    """
    now = clock()
    hostile, honest = claimed_devices(session_factory, tenant, clock, 2, master_key)
    h1 = batch(hostile, iat=now, records=[crash(now)], batch_id="1" * 32)
    h3 = batch(hostile, iat=now, records=[crash(now)], batch_id="3" * 32)
    x2 = batch(honest, iat=now, records=[crash(now, count=2)], batch_id="2" * 32)
    y4 = batch(honest, iat=now, records=[crash(now, count=4)], batch_id="4" * 32)
    # A third transaction holds x2's row (a concurrent copy, in flight): the first group waits on it.
    holder = engine.connect()
    holder.execute(
        insert(ErrorReportBatch).values(
            tenant_id=tenant.tenant_id,
            device_id=honest.device_id,
            batch_id="2" * 32,
            iat=int(now.timestamp()),
            received_at=now,
            records=1,
            dropped=0,
        )
    )
    answers: dict[str, list[str] | BaseException] = {}

    def run(name: str, bodies: list[bytes]) -> None:
        try:
            answers[name] = statuses(_group(session_factory, bodies, now))
        except BaseException as exc:  # noqa: BLE001 - the evidence is the exception itself
            answers[name] = exc

    def waiting() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one())

    def until(n: int, thread: threading.Thread) -> None:
        """Until ``n`` lock waits, or ``thread`` is done (in one order of the rows, the second one never waits)."""
        deadline = time.monotonic() + 10
        while waiting() < n and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    first = threading.Thread(target=run, args=("first", [h1, x2, h3, y4]))
    second = threading.Thread(target=run, args=("second", [h3, h1]))
    try:
        first.start()
        until(1, first)
        second.start()
        until(2, second)
    finally:
        holder.rollback()
        holder.close()
    first.join(timeout=30)
    second.join(timeout=30)
    assert not isinstance(answers["first"], BaseException), repr(answers["first"])
    assert not isinstance(answers["second"], BaseException), repr(answers["second"])
    assert sorted(answers["first"] + answers["second"]) == ["accepted"] * 4 + ["duplicate"] * 2
    assert count_rows(session_factory, ErrorReportBatch) == 4
    with session_factory() as session:
        assert session.scalars(select(ErrorBucket.event_count)).one() == 1 + 1 + 2 + 4


def test_a_database_fault_of_a_group_stores_its_batches_one_by_one(
    *,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deadlock (or any driver error) while a group is written: rolled back, then each batch alone, each once."""
    now = clock()
    groups = _spy_count_in(
        monkeypatch, lambda n: OperationalError("INSERT ...", {}, Exception("deadlock detected")) if n > 1 else None
    )
    bodies = _sends(claimed_devices(session_factory, tenant, clock, 3, master_key), now)
    assert statuses(_group(session_factory, bodies, now)) == ["accepted"] * 6
    assert groups == [6, 1, 1, 1, 1, 1, 1]
    assert count_rows(session_factory, ErrorReportBatch) == 6
    assert count_rows(session_factory, ErrorEvent) == 9


def test_a_full_queue_answers_busy_and_stores_nothing_of_those(
    *,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_WAITING batches waiting, a batch is refused at once (503 busy); it can be sent again later."""
    now = clock()
    devices = claimed_devices(session_factory, tenant, clock, 2, master_key)
    bodies = [batch(devices[n % 2], iat=now, records=[crash(now)]) for n in range(5)]
    monkeypatch.setattr(ingest_queue, "MAX_WAITING", 2)
    queue = new_queue(session_factory)
    assert queue_statuses(queue, bodies, now) == ["accepted", "accepted", "busy", "busy", "busy"]
    assert count_rows(session_factory, ErrorReportBatch) == 2
    assert queue_statuses(queue, bodies[2:4], now) == ["accepted", "accepted"]  # sent again: stored once each
    assert count_rows(session_factory, ErrorReportBatch) == 4


def test_a_full_queue_is_a_503_with_retry_after(
    *,
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (device,) = claimed_devices(session_factory, tenant, clock, 1, master_key)
    monkeypatch.setattr(ingest_queue, "MAX_WAITING", 0)
    r = client.post(ENDPOINT, content=batch(device, iat=clock(), records=[crash(clock())]), headers=COSE)
    assert r.status_code == 503
    assert r.json()["error"] == "ingest_busy"
    assert r.headers["retry-after"] == str(ingest_queue.BUSY_RETRY_AFTER_S)


def test_a_device_is_counted_once_per_version_also_after_its_events_are_rolled_up(
    *,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """Retention deletes raw events; who was counted in a bucket's version is kept apart from them."""
    now = clock()
    (device,) = claimed_devices(session_factory, tenant, clock, 1, master_key)
    settings = ErrorReportSettings(event_retention=dt.timedelta(hours=1), batch_retention=dt.timedelta(hours=2))
    assert statuses(_group(session_factory, [batch(device, iat=now, records=[crash(now)])], now)) == ["accepted"]
    later = now + dt.timedelta(hours=2)  # the device's certificate (24 h) still holds
    with session_factory() as session:
        assert prune_once(session, now=later, settings=settings).events_rolled_up == 1
        session.commit()
    assert count_rows(session_factory, ErrorEvent) == 0
    again = [batch(device, iat=later, records=[crash(later)]), batch(device, iat=later, records=[crash(later)])]
    assert statuses(_group(session_factory, again, later)) == ["accepted", "accepted"]
    with session_factory() as session:
        version = session.scalars(select(ErrorBucketVersion)).one()
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (version.event_count, version.device_count) == (3, 1)
        assert (bucket.event_count, bucket.device_count) == (3, 1)
        seen = session.scalars(select(ErrorBucketVersionDevice)).all()
        assert [(s.version, s.device_id) for s in seen] == [("1.0.0", device.device_id)]
