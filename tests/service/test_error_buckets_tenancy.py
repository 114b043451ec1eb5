"""Issue 8 follow-ups: a tenant never reads, resolves or downloads another tenant's bucket; list severity."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pytest
from error_world import COSE, ENDPOINT, batch, crash
from fleet_world import StatusDevice, make_status_device
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.audit.service import NOT_IN_TENANT
from bastion.service.models import AuditEvent, ErrorBucket
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

API = "/api/v1/error-reports"


@pytest.fixture
def device(
    tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> StatusDevice:
    return make_status_device(session_factory, owner_tenant=tenant.tenant_id, master_key=master_key, now=clock())


@pytest.fixture
def send(client: TestClient, device: StatusDevice, clock: FakeClock) -> Callable[..., None]:
    def _send(*records: dict[str, Any]) -> None:
        r = client.post(ENDPOINT, content=batch(device, iat=clock(), records=records), headers=COSE)
        assert r.status_code == 200, r.text

    return _send


def _info(at: dt.datetime) -> dict[str, Any]:
    """An Info record (an update applied): a fact, not a failure."""
    return {
        "category": "Update",
        "event_class": "Info",
        "event_type": "update_applied",
        "component_id": "app1",
        "version": "1.0.0",
        "count": 1,
        "first_at": int(at.timestamp()),
        "last_at": int(at.timestamp()),
        "description": "app1 1.0.0 installed",
    }


def test_another_tenant_can_not_read_resolve_or_download_a_bucket_by_id(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    send: Callable[..., None],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    send(crash(clock(), count=3))
    owner = bearer(tenant.admin_token)
    bucket_id = client.get(f"{API}/buckets", headers=owner).json()["items"][0]["bucket_id"]
    attacker_tenant = make_tenant("mallory")
    attacker = bearer(attacker_tenant.admin_token)

    attempts = [
        ("error_report.read", client.get(f"{API}/buckets/{bucket_id}", headers=attacker)),
        ("error_report.resolve", client.post(f"{API}/buckets/{bucket_id}/resolve", headers=attacker)),
        ("error_report.download", client.get(f"{API}/download", params={"bucket": bucket_id}, headers=attacker)),
        (
            "error_report.download",
            client.get(f"{API}/download", params={"bucket": bucket_id, "format": "json"}, headers=attacker),
        ),
    ]
    for _action, r in attempts:
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "bucket_not_found"
        assert "ZeroDivisionError" not in r.text
    # The same answer as for a bucket that does not exist at all.
    missing = client.get(f"{API}/download", params={"bucket": "b" + "0" * 16}, headers=attacker)
    assert missing.status_code == 404
    assert missing.json()["error"] == "bucket_not_found"

    with session_factory() as session:
        bucket = session.get(ErrorBucket, bucket_id)
        assert bucket is not None
        assert bucket.state == "open"  # the foreign resolve changed nothing
        assert bucket.resolved_by is None
        records = session.scalars(
            select(AuditEvent).where(
                AuditEvent.tenant_id == attacker_tenant.tenant_id, AuditEvent.detail == NOT_IN_TENANT
            )
        ).all()
        assert [(e.action, e.target) for e in records] == [
            (action, f"bucket:{bucket_id}") for action, _ in attempts
        ] + [("error_report.download", "bucket:b" + "0" * 16)]
        # Nothing is written into the owner's audit view by the outsider.
        assert not session.scalars(
            select(AuditEvent).where(AuditEvent.tenant_id == tenant.tenant_id, AuditEvent.detail == NOT_IN_TENANT)
        ).all()

    # The owner downloads exactly that bucket's events.
    r = client.get(f"{API}/download", params={"bucket": bucket_id}, headers=owner)
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["Bucket"], row["EventCount"]) for row in rows] == [(bucket_id, "3")]
    assert client.get(f"{API}/download", params={"bucket": "../b1"}, headers=owner).status_code in (400, 422)


def test_download_of_one_bucket_leaves_out_the_others(
    client: TestClient, tenant: CreatedTenant, send: Callable[..., None], clock: FakeClock
) -> None:
    send(crash(clock()), crash(clock(), exception="KeyError"))
    auth = bearer(tenant.admin_token)
    buckets = {
        b["title"].split()[0]: b["bucket_id"] for b in client.get(f"{API}/buckets", headers=auth).json()["items"]
    }
    r = client.get(f"{API}/download", params={"bucket": buckets["KeyError"], "format": "json"}, headers=auth)
    assert [item["Bucket"] for item in r.json()] == [buckets["KeyError"]]


def test_bucket_lists_show_error_and_warning_unless_info_is_asked_for(
    client: TestClient, tenant: CreatedTenant, send: Callable[..., None], clock: FakeClock
) -> None:
    send(crash(clock()), _info(clock()))
    auth = bearer(tenant.admin_token)
    default = client.get(f"{API}/buckets", headers=auth).json()["items"]
    assert [b["category"] for b in default] == ["AppCrash"]
    assert client.get(f"{API}/buckets", params={"severity": "warning"}, headers=auth).json()["items"] == default
    everything = client.get(f"{API}/buckets", params={"severity": "info"}, headers=auth).json()["items"]
    assert sorted(b["category"] for b in everything) == ["AppCrash", "Update"]
    assert client.get(f"{API}/buckets", params={"severity": "debug"}, headers=auth).status_code in (400, 422)


def test_a_bucket_id_collision_never_counts_into_another_tenants_bucket(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    send: Callable[..., None],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """Red team: a bucket ID is 64 bits of SHA-256(tenant, fingerprint), and the fingerprint is the device's
    to choose, so a colliding ID is a matter of compute. Ingest must check the row it locks is the reporting
    tenant's bucket of that fingerprint, not just a row with that ID.

    The collision is simulated: the owner's bucket row is handed to another tenant (another fingerprint).
    """
    send(crash(clock(), count=3))
    owner = bearer(tenant.admin_token)
    bucket_id = client.get(f"{API}/buckets", headers=owner).json()["items"][0]["bucket_id"]
    victim = make_tenant("victim")
    with session_factory() as session:
        row = session.get(ErrorBucket, bucket_id)
        assert row is not None
        row.tenant_id, row.fingerprint, row.state, row.resolved_version = (
            victim.tenant_id,
            "v" * 64,
            "resolved",
            "1.0.0",
        )
        session.commit()

    send(crash(clock(), count=5, version="2.0.0"))  # the hostile device reports again into the colliding ID

    with session_factory() as session:
        theirs = session.get(ErrorBucket, bucket_id)
        assert theirs is not None
        assert (theirs.event_count, theirs.state, theirs.last_version) == (3, "resolved", "1.0.0")
        assert not session.scalars(
            select(AuditEvent).where(
                AuditEvent.target == f"bucket:{bucket_id}", AuditEvent.action == "error_report.regressed"
            )
        ).all()
    # The reporting tenant still sees its new records in a bucket of its own.
    items = client.get(f"{API}/buckets", headers=owner).json()["items"]
    assert [(b["event_count"], b["bucket_id"] != bucket_id) for b in items] == [(5, True)]
