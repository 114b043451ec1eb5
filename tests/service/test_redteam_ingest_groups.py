"""Red-team tests of group commit (ADR 0028): one sender's batch must not decide another's answer."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from error_world import COSE, ENDPOINT, batch, crash
from group_world import claimed_devices, count_rows, new_queue, queue_statuses, statuses
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.crypto.keys import generate_private_key
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports import ingest, ingest_queue
from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS
from bastion.service.models import ErrorReportBatch
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient


def _self_signed(uri: str, cn: str, now: dt.datetime) -> bytes:
    """An anonymous sender's COSE_Sign1: a self-signed certificate naming ``uri`` and ``cn``."""
    key = generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return sign1(b"\xa0", key, x5chain=[certificate_der(cert)])


def test_an_anonymous_nul_tenant_id_is_refused_alone_in_its_group(
    *, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    """A self-signed certificate naming tenant "\\x00": PostgreSQL refuses the NUL in the CA lookup (DataError).

    That is no ServiceError, so it escaped check_batch and accept_group: every batch of the group (other
    devices', authentic ones) was answered 500 and none was stored. It must be untrusted_certificate alone.
    """
    now = clock()
    honest = claimed_devices(session_factory, tenant, clock, 1, master_key)[0]
    hostile = _self_signed("urn:bastion:tenant:\x00:device:abc", "abc", now)
    good = batch(honest, iat=now, records=[crash(now)])
    with session_factory() as session:
        answers = ingest.accept_group(session, [(good, now), (hostile, now)], refusals=RefusalLog())
    assert statuses(answers) == ["accepted", "untrusted_certificate"]
    assert count_rows(session_factory, ErrorReportBatch) == 1


def test_the_queue_answers_an_honest_batch_beside_a_nul_tenant_id(
    *, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    """Through the worker's queue: the anonymous body must not make the device's batch a 500."""
    now = clock()
    honest = claimed_devices(session_factory, tenant, clock, 1, master_key)[0]
    bodies = [
        batch(honest, iat=now, records=[crash(now)]),  # a lone first group
        _self_signed("urn:bastion:tenant:\x00:device:abc", "abc", now),
        batch(honest, iat=now, records=[crash(now, count=2)]),
    ]
    assert queue_statuses(new_queue(session_factory), bodies, now) == ["accepted", "untrusted_certificate", "accepted"]
    assert count_rows(session_factory, ErrorReportBatch) == 2


def test_a_nul_tenant_id_is_a_403_not_a_500(*, client: TestClient, clock: FakeClock) -> None:
    """Bad input from anyone (no key of any tenant needed) must not be a 500; on PostgreSQL it was."""
    hostile = _self_signed("urn:bastion:tenant:\x00:device:abc", "abc", clock())
    for endpoint in (ENDPOINT, "/api/v1/device/logs", "/api/v1/device/status"):
        r = client.post(endpoint, content=hostile, headers=COSE)
        assert r.status_code == 403, (endpoint, r.status_code, r.text)
        assert r.json()["error"] == "untrusted_certificate"


def test_an_unexpected_fault_of_one_batch_is_its_own(
    *,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a batch's checks raise that is not a ServiceError (a library's or a driver's error on
    its input, as the NUL above), only that batch fails: the others of its group are stored and answered."""
    now = clock()
    d0, d1 = (claimed_devices(session_factory, tenant, clock, 1, master_key)[0] for _ in range(2))
    real = ingest.fingerprint

    def faulty(category: str, event_type: str, component_id: str, version: str, detail: dict) -> object:
        if detail.get("exception") == "Boom":
            raise RuntimeError("a bug reached by one device's input")
        return real(category, event_type, component_id, version, detail)

    monkeypatch.setattr(ingest, "fingerprint", faulty)
    bodies = [
        batch(d0, iat=now, records=[crash(now)]),
        batch(d1, iat=now, records=[crash(now, exception="Boom")]),
        batch(d1, iat=now, records=[crash(now, count=2)]),
    ]
    with session_factory() as session:
        answers = ingest.accept_group(session, [(b, now) for b in bodies], refusals=RefusalLog())
    assert statuses(answers) == [
        "accepted",
        "RuntimeError",
        "accepted",
    ]
    assert count_rows(session_factory, ErrorReportBatch) == 2


def test_junk_that_needs_no_lookup_does_not_take_a_devices_place_in_the_queue(
    *,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    master_key: bytes,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An anonymous client that keeps MAX_WAITING bodies waiting per worker (oversized ones, or bytes that are
    not COSE: refusable on the event loop with no lookup) made every device's batch a 503 ingest_busy.
    Such bodies now wait apart, under a bound of their own (MAX_WAITING_MALFORMED), and are still refused.
    """
    now = clock()
    honest = claimed_devices(session_factory, tenant, clock, 1, master_key)[0]
    monkeypatch.setattr(ingest_queue, "MAX_WAITING", 1)
    monkeypatch.setattr(ingest_queue, "MAX_WAITING_MALFORMED", 3)
    junk = [b"\xff" * (DEFAULT_ERROR_REPORT_SETTINGS.max_batch_bytes + 1), b"not cbor", b"\x00", b"\xa0"]
    answers = queue_statuses(new_queue(session_factory), [*junk, batch(honest, iat=now)], now)
    assert answers == ["report_too_large", "malformed_report", "malformed_report", "busy", "accepted"]


def test_a_client_gone_mid_wait_does_not_change_the_others_answers(
    *, tenant: CreatedTenant, session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> None:
    """Held: a waiter cancelled (its client went away) is still stored, once; the others are answered."""
    now = clock()
    d0, d1 = (claimed_devices(session_factory, tenant, clock, 1, master_key)[0] for _ in range(2))
    bodies = [batch(d0, iat=now, records=[crash(now)]), batch(d1, iat=now), batch(d0, iat=now)]
    queue = new_queue(session_factory)

    async def main() -> list[object]:
        tasks = [asyncio.create_task(queue.submit(b, now=now, settings=DEFAULT_ERROR_REPORT_SETTINGS)) for b in bodies]
        await asyncio.sleep(0)
        tasks[1].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    first, gone, last = asyncio.run(main())
    assert isinstance(gone, asyncio.CancelledError)
    assert (first.status, last.status) == ("accepted", "accepted")  # type: ignore[union-attr]
    assert count_rows(session_factory, ErrorReportBatch) == 3
