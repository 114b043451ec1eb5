"""Red team: error-report counters with many odd versions in one batch; a group's removal against a refresh."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import uuid
from pathlib import Path

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fastapi import FastAPI
from fleet_world import StatusDevice, make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.errorreports.limits import ErrorReportSettings
from bastion.service.models import ErrorBucket, ErrorBucketVersion
from bastion.service.tenants.service import CreatedTenant
from bastion.service.tuf.errors import InvalidGroupId
from bastion.service.tuf.files import group_lock
from bastion.service.tuf.layout import group_dir
from bastion.service.tuf.repository import TargetSpec, publish_group, remove_group
from conftest import FakeClock, TestClient

#: Versions a hostile device may send: empty, prefixed, padded, unicode, semver-equal spellings, 64 chars.
ODD = ["", "1.0", "1.0.0", "01.0.0", "v1.0.0", "1.0.0 ", "1.0.0-rc.1", "1.0.0+b", "ünï", "9" * 64, "0", "-1"]


def test_many_odd_versions_in_one_batch_are_each_counted_once_per_device(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    now = clock()
    versions = ODD + [f"2.{n}.0" for n in range(128 - len(ODD))]
    records = [crash(now, version=v) for v in versions]
    devices: list[StatusDevice] = [
        make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
        for _ in range(2)
    ]
    for sender in (devices[0], devices[0], devices[1]):  # the first device twice
        r = client.post(ENDPOINT, content=batch(sender, iat=now, records=records), headers=COSE)
        assert r.status_code == 200, r.text
    with session_factory() as session:
        bucket = session.scalars(select(ErrorBucket)).one()
        assert (bucket.event_count, bucket.device_count) == (3 * 128, 2)
        rows = {v.version: (v.event_count, v.device_count) for v in session.scalars(select(ErrorBucketVersion))}
    assert rows == dict.fromkeys(versions, (3, 2))


@pytest.fixture
def tuf_settings(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, database_url=f"sqlite:///{home / 'unused.db'}", master_key=secrets.token_bytes(32))


def test_removing_a_group_waits_for_a_writer_holding_the_group_lock(tuf_settings: Settings) -> None:
    """A refresh (or publish) holds only the inner group lock; a removal must not rename the directory under it."""
    group = str(uuid.uuid4())
    ref = BlobStore(tuf_settings.home / "blobs").put_bytes(b"app" * 10)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    publish_group(tuf_settings, group, [TargetSpec("apps/c/1.img", ref.sha256, ref.size, {})], now=now)
    held, done = threading.Event(), threading.Event()
    release = threading.Event()

    def writer() -> None:
        with group_lock(group_dir(tuf_settings, group)):
            held.set()
            release.wait(10)

    def remover() -> None:
        remove_group(tuf_settings, group)
        done.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=remover)]
    threads[0].start()
    assert held.wait(10)
    threads[1].start()
    try:
        assert not done.wait(0.5), "the repository was removed while a writer held its lock"
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert done.is_set()
    assert not group_dir(tuf_settings, group).exists()


@pytest.mark.parametrize(
    "group_id", ["..", "../victim", "a/b", "", ".removed-x", "/etc", "8F6B2A1C-3D4E-4F5A-9B6C-7D8E9F0A1B2C", "*"]
)
def test_removing_a_group_whose_id_is_a_path_removes_nothing(tuf_settings: Settings, group_id: str) -> None:
    """Path tricks for a group ID: refused by the ID check before any rename or delete (nothing else goes)."""
    group = str(uuid.uuid4())
    ref = BlobStore(tuf_settings.home / "blobs").put_bytes(b"app" * 10)
    publish_group(
        tuf_settings, group, [TargetSpec("apps/c/1.img", ref.sha256, ref.size, {})], now=dt.datetime.now(dt.UTC)
    )
    victim = tuf_settings.home / "victim"
    victim.mkdir()
    (victim / "keep").write_text("kept")
    before = sorted(p.relative_to(tuf_settings.home) for p in tuf_settings.home.rglob("*"))
    with pytest.raises(InvalidGroupId):
        remove_group(tuf_settings, group_id)
    assert sorted(p.relative_to(tuf_settings.home) for p in tuf_settings.home.rglob("*")) == before
    assert group_dir(tuf_settings, group).is_dir()


def test_a_batch_of_many_buckets_past_the_cap_with_odd_versions_counts_right(  # noqa: PLR0917 - fixtures
    app: FastAPI,
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """128 records of 64 fingerprints and two versions each, a cap of 10 buckets: the rest share the overflow."""
    app.state.error_report_settings = ErrorReportSettings(max_buckets_per_tenant=10)
    now = clock()
    records = [crash(now, exception=f"E{n % 64}", version=ODD[n % 2]) for n in range(128)]
    senders = [make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)]
    senders.append(make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now))
    for sender in (senders[0], senders[1], senders[0]):
        r = client.post(ENDPOINT, content=batch(sender, iat=now, records=records), headers=COSE)
        assert r.status_code == 200, r.text
    with session_factory() as session:
        buckets = list(session.scalars(select(ErrorBucket)))
        assert len(buckets) == 11
        assert sum(b.event_count for b in buckets) == 3 * 128
        assert {b.device_count for b in buckets} == {2}
        versions = list(session.scalars(select(ErrorBucketVersion)))
        assert {v.device_count for v in versions} == {2}
        assert sum(v.event_count for v in versions) == 3 * 128


def test_concurrent_distinct_batches_of_two_devices_count_each_device_once(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
) -> None:
    """Eight different batches (two devices, new bucket, two versions each) race: counts stay exact."""
    now = clock()
    senders = [
        make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=now)
        for _ in range(2)
    ]
    records = [crash(now, version="1.0"), crash(now, version="1.0.0"), crash(now, exception="KeyError")]
    bodies = [batch(senders[n % 2], iat=now, records=records) for n in range(8)]
    codes: list[int] = []
    threads = [
        threading.Thread(target=lambda b=b: codes.append(client.post(ENDPOINT, content=b, headers=COSE).status_code))
        for b in bodies
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 8
    with session_factory() as session:
        buckets = list(session.scalars(select(ErrorBucket)))
        assert sorted((b.event_count, b.device_count) for b in buckets) == [(8, 2), (16, 2)]
        versions = sorted(
            (v.version, v.event_count, v.device_count) for v in session.scalars(select(ErrorBucketVersion))
        )
        assert versions == [("1.0", 8, 2), ("1.0.0", 8, 2), ("1.0.0", 8, 2)]
