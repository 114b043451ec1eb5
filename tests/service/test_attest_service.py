"""Attestation domain logic on a migrated database (SQLite and PostgreSQL).

Every attack fails closed with its code, and leaves an attestation record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from attest_sim import OS_DIGEST, SimDevice, SimVendor
from attest_world import World, openssl_verify
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.attestation.caches import AttestationCaches
from bastion.service.attestation.challenges import (
    CHALLENGE_TTL,
    CONSUMED_NONCE_RETENTION,
    NONCE_BYTES,
    ChallengeKey,
    issue_challenge,
)
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.repository import WriteTransaction
from bastion.service.attestation.service import NONCE_PRUNE_BATCH, AttestationOutcome, attest
from bastion.service.ca.service import tenant_ca_pem
from bastion.service.db import SQLITE_BUSY_TIMEOUT_MS, create_engine_for
from bastion.service.errors import InvalidDeviceId
from bastion.service.models import Challenge, Device, OsImage
from bastion.service.tenants.service import CreatedTenant
from bastion.service.vendors.service import trust_vendor
from conftest import FakeClock


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


class Harness:
    """Runs the domain functions the way the endpoint does, one session per call."""

    def __init__(self, world: World, engine: Engine, master_key: bytes) -> None:
        self.world = world
        self.engine = engine
        self.master_key = master_key
        self.challenge_key = ChallengeKey.from_master_key(master_key)
        self.caches = AttestationCaches()

    def challenge(self, device: SimDevice | str, *, now: dt.datetime | None = None) -> bytes:
        device_id = device if isinstance(device, str) else device.device_id
        return issue_challenge(self.challenge_key, device_id, now=now or self.world.now).nonce

    def attest(self, token: bytes, *, now: dt.datetime | None = None, prune_every: int = 8) -> AttestationOutcome:
        return attest(
            self.engine,
            token,
            now=now or self.world.now,
            master_key=self.master_key,
            challenge_key=self.challenge_key,
            caches=self.caches,
            prune_every=prune_every,
        )

    def refused(self, token: bytes, code: FailureCode, *, now: dt.datetime | None = None) -> AttestationFailure:
        with pytest.raises(AttestationFailure) as info:
            self.attest(token, now=now)
        assert info.value.code is code, info.value
        return info.value


@pytest.fixture
def harness(world: World, engine: Engine, master_key: bytes) -> Harness:
    return Harness(world, engine, master_key)


def assert_failure_recorded(world: World, device_id: str, code: FailureCode, *, marks_device: bool) -> None:
    records = world.records(device_id)
    assert records, "no attestation record"
    last = records[-1]
    assert (last.result, last.reason) == ("failed", code.value)
    assert last.cert_serial is None
    row = world.device_row(device_id)
    if row is not None:
        assert last.tenant_id == row.tenant_id
        if marks_device:
            assert (row.last_result, row.last_reason) == ("failed", code.value)
        else:
            assert row.last_result in {None, "ok"}


# --- happy path -----------------------------------------------------------------------


def test_attestation_issues_a_24h_client_certificate(harness: Harness, world: World, tmp_path: Path) -> None:
    chip = world.device()
    outcome = harness.attest(chip.eat(harness.challenge(chip)))

    cert = outcome.certificate
    tenant_id = world.tenant.tenant_id
    assert outcome.device_id == chip.device_id
    assert outcome.tenant_id == tenant_id
    assert cert.not_valid_after_utc - world.now == dt.timedelta(hours=24)
    assert cert.not_valid_before_utc <= world.now
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == chip.device_id
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == tenant_id
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert any(tenant_id in uri and chip.device_id in uri for uri in uris)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.public_key() == chip.tls_key.public_key()

    with world.sessions() as session:
        ca_pem = tenant_ca_pem(session, tenant_id)
    assert outcome.ca_chain_pem == (ca_pem,)
    result = openssl_verify(tmp_path, ca_pem, outcome.certificate_pem, at=world.now)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")

    row = world.device_row(chip.device_id)
    assert row is not None
    assert (row.last_result, row.last_reason, row.os_version) == ("ok", "ok", "1.0.0")
    assert row.os_measurement == OS_DIGEST.hex()
    assert row.cert_serial == outcome.serial == format(cert.serial_number, "x")
    assert row.cert_not_after == cert.not_valid_after_utc
    assert row.last_attested_at == world.now
    [record] = world.records(chip.device_id)
    assert (record.result, record.reason, record.cert_serial) == ("ok", "ok", outcome.serial)
    assert record.tenant_id == tenant_id


def test_the_insecure_no_sandbox_claim_is_stored_on_the_attestation_record(harness: Harness, world: World) -> None:
    # Issue 7 (appraisal): a device that runs --insecure-no-sandbox is now refused
    # (sandbox_disabled); the claim is still stored on the record of the refusal.
    chip = world.device()
    harness.attest(chip.eat(harness.challenge(chip)))
    nonce = harness.challenge(chip)
    harness.refused(
        chip.eat(nonce, claims=replace(chip.claims(nonce), insecure_no_sandbox=True)), FailureCode.SANDBOX_DISABLED
    )
    first, second = world.records(chip.device_id)
    assert (first.insecure_no_sandbox, second.insecure_no_sandbox) == (False, True)
    # A refusal after the evidence was verified records it too; one before does not know it.
    nonce = harness.challenge(chip)
    stale = chip.eat(nonce, claims=replace(chip.claims(nonce), insecure_no_sandbox=True))
    harness.refused(stale, FailureCode.SANDBOX_DISABLED)
    harness.refused(stale, FailureCode.NONCE_REPLAYED)
    assert world.records(chip.device_id)[-1].insecure_no_sandbox is True
    harness.refused(chip.eat_signed_by_other_key(harness.challenge(chip)), FailureCode.BAD_SIGNATURE)
    assert world.records(chip.device_id)[-1].insecure_no_sandbox is None


def test_openssl_rejects_the_certificate_under_another_tenant_ca(
    harness: Harness, world: World, make_tenant: object, tmp_path: Path
) -> None:
    """The openssl check is real: it fails against a CA that did not issue the cert."""
    chip = world.device()
    outcome = harness.attest(chip.eat(harness.challenge(chip)))
    other = make_tenant("other")  # type: ignore[operator]
    with world.sessions() as session:
        other_pem = tenant_ca_pem(session, other.tenant_id)
    assert openssl_verify(tmp_path, other_pem, outcome.certificate_pem, at=world.now).returncode != 0
    late = world.now + dt.timedelta(hours=25)
    assert openssl_verify(tmp_path, outcome.ca_chain_pem[0], outcome.certificate_pem, at=late).returncode != 0


def test_repeat_attestation_uses_a_new_nonce_and_cached_chain(harness: Harness, world: World) -> None:
    chip = world.device()
    first = harness.attest(chip.eat(harness.challenge(chip)))
    later = world.now + dt.timedelta(hours=19)
    second = harness.attest(chip.eat(harness.challenge(chip, now=later)), now=later)
    assert second.serial != first.serial
    assert len(harness.caches.chain) == 1
    assert [r.reason for r in world.records(chip.device_id)] == ["ok", "ok"]


# --- nonce attacks ----------------------------------------------------------------------


def test_replayed_nonce_is_refused(harness: Harness, world: World) -> None:
    chip = world.device()
    token = chip.eat(harness.challenge(chip))
    harness.attest(token)
    failure = harness.refused(token, FailureCode.NONCE_REPLAYED)
    assert "already used" in failure.detail
    assert_failure_recorded(world, chip.device_id, FailureCode.NONCE_REPLAYED, marks_device=False)
    # The replay issued nothing: one certificate, on the first attempt only.
    assert [r.cert_serial is not None for r in world.records(chip.device_id)] == [True, False]


def test_refused_authenticated_attempt_consumes_its_nonce(harness: Harness, world: World) -> None:
    """A nonce is used up by the first authenticated attempt, whatever its outcome."""
    chip = world.device(revoked=True)
    token = chip.eat(harness.challenge(chip))
    harness.refused(token, FailureCode.DEVICE_REVOKED)
    harness.refused(token, FailureCode.NONCE_REPLAYED)


def test_nonce_never_issued_is_refused(harness: Harness, world: World) -> None:
    chip = world.device()
    failure = harness.refused(chip.eat(bytes(NONCE_BYTES)), FailureCode.UNKNOWN_NONCE)
    assert "not issued by this service for this device" in failure.detail
    assert_failure_recorded(world, chip.device_id, FailureCode.UNKNOWN_NONCE, marks_device=False)


@pytest.mark.parametrize("where", [0, 16, 20, 31], ids=["random", "expiry", "mac-first", "mac-last"])
def test_forged_nonce_is_refused(harness: Harness, world: World, where: int) -> None:
    """Any bit changed in an issued nonce breaks its MAC (a later expiry cannot be forged)."""
    chip = world.device()
    nonce = bytearray(harness.challenge(chip))
    nonce[where] ^= 0x01
    harness.refused(chip.eat(bytes(nonce)), FailureCode.UNKNOWN_NONCE)
    assert_failure_recorded(world, chip.device_id, FailureCode.UNKNOWN_NONCE, marks_device=False)


def test_nonce_under_another_master_key_is_refused(harness: Harness, world: World) -> None:
    chip = world.device()
    other = ChallengeKey.from_master_key(bytes(32))
    nonce = issue_challenge(other, chip.device_id, now=world.now).nonce
    harness.refused(chip.eat(nonce), FailureCode.UNKNOWN_NONCE)


@pytest.mark.parametrize("size", [8, NONCE_BYTES - 1, NONCE_BYTES + 1, 64])
def test_nonce_of_the_wrong_size_is_refused(harness: Harness, world: World, size: int) -> None:
    chip = world.device()
    harness.refused(chip.eat(harness.challenge(chip)[:size].ljust(size, b"\0")), FailureCode.UNKNOWN_NONCE)


def test_expired_nonce_is_refused(harness: Harness, world: World) -> None:
    chip = world.device()
    nonce = harness.challenge(chip)
    harness.refused(chip.eat(nonce), FailureCode.NONCE_EXPIRED, now=world.now + CHALLENGE_TTL)
    assert_failure_recorded(world, chip.device_id, FailureCode.NONCE_EXPIRED, marks_device=False)
    # Still expired however often it is presented, long after any row is pruned.
    later = world.now + CHALLENGE_TTL + CONSUMED_NONCE_RETENTION + dt.timedelta(hours=1)
    harness.refused(chip.eat(nonce), FailureCode.NONCE_EXPIRED, now=later)


def test_nonce_just_before_expiry_is_accepted(harness: Harness, world: World) -> None:
    chip = world.device()
    nonce = harness.challenge(chip)
    harness.attest(chip.eat(nonce), now=world.now + CHALLENGE_TTL - dt.timedelta(seconds=1))


def test_nonce_of_another_device_is_refused(harness: Harness, world: World) -> None:
    """Without stored state this is indistinguishable from a forged nonce: ``unknown_nonce``."""
    chip, other = world.device(), world.device()
    nonce = harness.challenge(other)
    harness.refused(chip.eat(nonce), FailureCode.UNKNOWN_NONCE)
    assert_failure_recorded(world, chip.device_id, FailureCode.UNKNOWN_NONCE, marks_device=False)
    # The other device's nonce was not burnt by the attempt.
    harness.attest(other.eat(nonce))


def test_concurrent_replay_succeeds_once(harness: Harness, world: World) -> None:
    """Requests racing with the same evidence on separate connections: the nonce is consumed atomically."""
    chip = world.device()
    token = chip.eat(harness.challenge(chip))
    results: list[str] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            harness.attest(token)
            results.append("ok")
        except AttestationFailure as failure:
            results.append(failure.code.value)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["nonce_replayed"] * 3 + ["ok"]
    assert [r.reason for r in world.records(chip.device_id)].count("ok") == 1
    assert len(world.records(chip.device_id)) == 4


# --- evidence attacks -------------------------------------------------------------------


def test_eat_signed_by_another_key(harness: Harness, world: World) -> None:
    chip = world.device()
    nonce = harness.challenge(chip)
    harness.refused(chip.eat_signed_by_other_key(nonce), FailureCode.BAD_SIGNATURE)
    assert_failure_recorded(world, chip.device_id, FailureCode.BAD_SIGNATURE, marks_device=False)
    # The forged attempt did not burn the device's nonce.
    harness.attest(chip.eat(nonce))


def test_alias_not_signed_by_device_id_key(harness: Harness, world: World) -> None:
    chip = world.device()
    token = chip.eat_with_forged_alias(harness.challenge(chip), now=world.now)
    harness.refused(token, FailureCode.UNTRUSTED_CHAIN)
    assert_failure_recorded(world, chip.device_id, FailureCode.UNTRUSTED_CHAIN, marks_device=False)


def test_device_id_from_untrusted_vendor(harness: Harness, world: World) -> None:
    rogue = SimDevice.manufacture(SimVendor.create(now=world.now, name="Rogue"), now=world.now)
    token = rogue.eat(harness.challenge(rogue))
    harness.refused(token, FailureCode.UNTRUSTED_CHAIN)
    [record] = world.records(rogue.device_id)
    assert record.reason == "untrusted_chain"
    assert record.detail.startswith("unauthenticated evidence")


def test_measurements_differing_from_alias_tcb_info(harness: Harness, world: World) -> None:
    chip = world.device()
    lie = chip.eat_with_lying_measurements(harness.challenge(chip), hashlib.sha256(b"other").digest())
    harness.refused(lie, FailureCode.MEASUREMENT_MISMATCH)
    assert_failure_recorded(world, chip.device_id, FailureCode.MEASUREMENT_MISMATCH, marks_device=True)


@pytest.mark.parametrize("token", [b"", b"garbage", b"\xd2\x84\x40\xa0\x40\x40"], ids=["empty", "text", "empty-cose"])
def test_garbage_is_malformed_and_recorded(harness: Harness, world: World, token: bytes) -> None:
    failure = harness.refused(token, FailureCode.MALFORMED_EVIDENCE)
    assert failure.device_id is None
    [record] = world.records("")
    assert (record.result, record.reason, record.tenant_id) == ("failed", "malformed_evidence", None)


# --- device and OS checks ---------------------------------------------------------------


def test_unclaimed_device_is_refused(harness: Harness, world: World) -> None:
    chip = world.device(claimed=False)
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.DEVICE_UNCLAIMED)
    [record] = world.records(chip.device_id)
    assert (record.reason, record.tenant_id) == ("device_unclaimed", None)


def test_revoked_device_is_refused(harness: Harness, world: World) -> None:
    chip = world.device(revoked=True)
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.DEVICE_REVOKED)
    assert_failure_recorded(world, chip.device_id, FailureCode.DEVICE_REVOKED, marks_device=True)
    row = world.device_row(chip.device_id)
    assert row is not None
    assert row.cert_serial is None


def test_revocation_takes_effect_at_once_despite_the_cached_standing(harness: Harness, world: World) -> None:
    """The good standing is cached, but the success write re-checks it atomically."""
    chip = world.device()
    harness.attest(chip.eat(harness.challenge(chip)))
    with world.sessions() as session:
        session.execute(update(Device).where(Device.device_id == chip.device_id).values(revoked_at=world.now))
        session.commit()
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.DEVICE_REVOKED)
    assert_failure_recorded(world, chip.device_id, FailureCode.DEVICE_REVOKED, marks_device=True)
    assert [r.cert_serial is not None for r in world.records(chip.device_id)] == [True, False]


def test_os_revocation_takes_effect_at_once_despite_the_cached_standing(harness: Harness, world: World) -> None:
    chip = world.device()
    harness.attest(chip.eat(harness.challenge(chip)))
    with world.sessions() as session:
        session.execute(update(OsImage).where(OsImage.measurement == chip.os_measurement).values(revoked_at=world.now))
        session.commit()
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.OS_REVOKED)
    assert_failure_recorded(world, chip.device_id, FailureCode.OS_REVOKED, marks_device=True)
    # The refusal dropped the cached standing: the next attempt reads it again.
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.OS_REVOKED)


def test_unknown_os_is_refused(harness: Harness, world: World) -> None:
    chip = world.device(os_digest=hashlib.sha256(b"unpublished os").digest())
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.UNKNOWN_OS)
    assert_failure_recorded(world, chip.device_id, FailureCode.UNKNOWN_OS, marks_device=True)
    assert world.records(chip.device_id)[-1].os_measurement == chip.os_measurement


def test_revoked_os_is_refused(harness: Harness, world: World) -> None:
    digest = hashlib.sha256(b"withdrawn os").digest()
    world.publish_os(digest.hex(), "0.9.0", revoked=True)
    chip = world.device(os_digest=digest)
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.OS_REVOKED)
    assert_failure_recorded(world, chip.device_id, FailureCode.OS_REVOKED, marks_device=True)


def test_os_known_good_for_another_tenant_only(
    harness: Harness, world: World, make_tenant: object, session_factory: sessionmaker[Session]
) -> None:
    """ADR 0001: reference values are per tenant."""
    other = make_tenant("other")  # type: ignore[operator]
    digest = hashlib.sha256(b"other tenant's os").digest()
    World(sessions=session_factory, tenant=other, vendor=world.vendor, now=world.now).publish_os(digest.hex(), "2")
    chip = world.device(os_digest=digest)
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.UNKNOWN_OS)


# --- challenges and consumed nonces ----------------------------------------------------


def consumed(world: World) -> int:
    with world.sessions() as session:
        return session.scalar(select(func.count()).select_from(Challenge)) or 0


def test_challenge_is_random_bound_expiring_and_writes_nothing(harness: Harness, world: World) -> None:
    chip = world.device()
    first = issue_challenge(harness.challenge_key, chip.device_id, now=world.now)
    second = issue_challenge(harness.challenge_key, chip.device_id, now=world.now)
    assert len(first.nonce) == NONCE_BYTES == 32
    assert first.nonce != second.nonce
    assert first.device_id == chip.device_id
    assert first.expires_at == world.now + dt.timedelta(seconds=60)
    assert consumed(world) == 0


def test_challenge_expiry_rounds_up_to_a_whole_second(harness: Harness) -> None:
    now = dt.datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=dt.UTC)
    issued = issue_challenge(harness.challenge_key, "ab" * 32, now=now)
    assert issued.expires_at == dt.datetime(2026, 1, 1, 0, 1, 1, tzinfo=dt.UTC)


def test_challenge_key_is_derived_not_the_master_key(master_key: bytes) -> None:
    key = ChallengeKey.from_master_key(master_key)
    assert repr(key) == "ChallengeKey(<secret>)"
    again = ChallengeKey.from_master_key(master_key)
    device_id = "ab" * 32
    random, expiry = bytes(16), bytes(4)
    assert key.mac(device_id, random, expiry) == again.mac(device_id, random, expiry)
    assert key.mac(device_id, random, expiry) != ChallengeKey(master_key).mac(device_id, random, expiry)


@pytest.mark.parametrize("bad", ["", "ab" * 31, "AB" * 32, "zz" * 32, "ab" * 33])
def test_challenge_needs_a_device_id(harness: Harness, bad: str) -> None:
    with pytest.raises(InvalidDeviceId):
        issue_challenge(harness.challenge_key, bad, now=harness.world.now)


def test_consumed_nonces_are_pruned_in_bounded_batches(harness: Harness, world: World) -> None:
    chip = world.device()
    count = NONCE_PRUNE_BATCH + 10
    for _ in range(count):
        harness.attest(chip.eat(harness.challenge(chip)), prune_every=0)
    assert consumed(world) == count
    later = world.now + CHALLENGE_TTL + CONSUMED_NONCE_RETENTION + dt.timedelta(seconds=1)
    harness.attest(chip.eat(harness.challenge(chip, now=later)), now=later, prune_every=1)
    assert consumed(world) == count - NONCE_PRUNE_BATCH + 1
    harness.attest(chip.eat(harness.challenge(chip, now=later)), now=later, prune_every=1)
    assert consumed(world) == 2


def test_pruning_is_amortized(harness: Harness, world: World) -> None:
    """With the default rate, old rows still go away as new nonces are consumed."""
    chip = world.device()
    for _ in range(20):
        harness.attest(chip.eat(harness.challenge(chip)))
    later = world.now + CHALLENGE_TTL + CONSUMED_NONCE_RETENTION + dt.timedelta(seconds=1)
    for _ in range(150):
        harness.attest(chip.eat(harness.challenge(chip, now=later)), now=later)
    with world.sessions() as session:
        old = select(func.count()).select_from(Challenge).where(Challenge.expires_at <= world.now + CHALLENGE_TTL)
        assert session.scalar(old) == 0


def test_recently_expired_nonces_are_kept_against_clock_skew(harness: Harness, world: World) -> None:
    """A worker whose clock lags must still see a consumed nonce until it expired long ago."""
    chip = world.device()
    token = chip.eat(harness.challenge(chip))
    harness.attest(token)
    skewed = world.now + CHALLENGE_TTL + dt.timedelta(seconds=5)
    harness.attest(chip.eat(harness.challenge(chip, now=skewed)), now=skewed, prune_every=1)
    assert consumed(world) == 2
    harness.refused(token, FailureCode.NONCE_REPLAYED)


def test_new_vendor_is_trusted_after_the_cache_ttl(harness: Harness, world: World) -> None:
    harness.caches.trust_anchors(harness.engine, world.now)  # warm the cache
    vendor2 = SimVendor.create(now=world.now, name="Second vendor")
    with world.sessions() as session:
        trust_vendor(session, vendor2.pem.encode(), name="v2", now=world.now)
    chip = SimDevice.manufacture(vendor2, now=world.now)
    with world.sessions() as session:
        session.add(
            Device(device_id=chip.device_id, tenant_id=world.tenant.tenant_id, claimed_at=world.now, claimed_by="t")
        )
        session.commit()
    harness.refused(chip.eat(harness.challenge(chip)), FailureCode.UNTRUSTED_CHAIN)
    later = world.now + harness.caches.ttl
    outcome = harness.attest(chip.eat(harness.challenge(chip, now=later)), now=later)
    assert outcome.device_id == chip.device_id


def test_sqlite_writer_waits_for_the_write_lock_and_restores_the_busy_timeout(tmp_path: Path) -> None:
    """Another process's write transaction delays ours (fine-grained retries), never fails it."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'lock.db'}")
    try:
        with engine.connect() as holder, engine.connect() as waiter:
            holder.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            holder.commit()
            holder.exec_driver_sql("BEGIN IMMEDIATE")
            holder.exec_driver_sql("INSERT INTO t VALUES (1)")
            release = threading.Timer(0.2, holder.commit)
            release.start()
            started = time.monotonic()
            with WriteTransaction(waiter) as tx:
                waited = time.monotonic() - started
                tx.execute(text("INSERT INTO t VALUES (2)"), {})
                tx.commit()
            release.join()
            assert waited >= 0.15
            assert waiter.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
            assert waiter.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
    finally:
        engine.dispose()
