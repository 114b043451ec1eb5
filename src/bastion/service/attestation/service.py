"""Attestation domain logic: the database-side checks, the write transaction and certificate issuance.

Takes a SQLAlchemy :class:`~sqlalchemy.Engine` and uses plain Core connections
(no ORM session on the hot path); does no HTTP. The pure checks (chain,
signature, measurements) live in :mod:`bastion.service.attestation.verifier`,
the stateless nonces in :mod:`bastion.service.attestation.challenges`.

One attestation costs one short write transaction: insert the consumed nonce
(a primary-key conflict is a replay), update the device (guarded, so a
revocation committed meanwhile is not overwritten by a success), insert the
attestation record. The device's standing is read, and the certificate signed,
before that transaction, so SQLite's single write lock is held only for the
writes themselves.

Example:
    >>> outcome = attest(engine, token, now=now, master_key=key,
    ...                  challenge_key=ChallengeKey.from_master_key(key))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Engine

from bastion.crypto import certs
from bastion.service.attestation import repository
from bastion.service.attestation.appraisal import Finding, appraise, parse_rules, verdict
from bastion.service.attestation.caches import AttestationCaches
from bastion.service.attestation.capability import PresentedCapability, check_capability
from bastion.service.attestation.challenges import CONSUMED_NONCE_RETENTION, ChallengeKey, check_nonce
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.verifier import DEFAULT_LIMITS, VerifiedEvidence, VerifierLimits, verify_evidence

__all__ = [
    "MAX_DETAIL_CHARS",
    "NONCE_PRUNE_BATCH",
    "NONCE_PRUNE_EVERY",
    "AttestationOutcome",
    "attest",
    "record_refused",
]

#: At most this many expired consumed nonces are deleted per pruning pass.
NONCE_PRUNE_BATCH = 64
#: A pruning pass runs in one attestation in this many (at random), so pruning
#: can remove up to 64/8 = 8 old rows per attestation on average: it keeps pace
#: with consumption at an eighth of the cost of pruning every time.
NONCE_PRUNE_EVERY = 8
#: Bound on the attestation detail stored in the database.
MAX_DETAIL_CHARS = 500
#: Width of the ``os_version`` columns.
MAX_VERSION_CHARS = 64


@dataclass(frozen=True)
class AttestationOutcome:
    """A successful attestation.

    Attributes:
        device_id: the attested device.
        tenant_id: the tenant that claimed it.
        certificate: the issued device certificate.
        certificate_pem: the same, PEM.
        ca_chain_pem: the tenant CA certificate(s), PEM.
        not_after: the certificate's expiry.
        serial: the certificate's serial number, lowercase hex.
        os_version: the known-good OS version that was measured.
        os_measurement: its measurement, lowercase hex.
        capability: the verified device capability it attested with, or None.
    """

    device_id: str
    tenant_id: str
    certificate: x509.Certificate
    certificate_pem: str
    ca_chain_pem: tuple[str, ...]
    not_after: dt.datetime
    serial: str
    os_version: str
    os_measurement: str
    capability: PresentedCapability | None = None


def _judge(
    standing: repository.DeviceStanding | None, device_id: str
) -> repository.DeviceStanding | AttestationFailure:
    """The standing if the device and its OS are good, else the refusal (docs/design.md, "Attestation", step 3)."""
    if standing is None:
        return AttestationFailure(
            FailureCode.DEVICE_UNCLAIMED,
            "the device is not claimed by any tenant",
            device_id=device_id,
            authenticated=True,
        )
    if standing.device_revoked:
        return AttestationFailure(
            FailureCode.DEVICE_REVOKED, "the device is revoked", device_id=device_id, authenticated=True
        )
    if not standing.os_known:
        return AttestationFailure(
            FailureCode.UNKNOWN_OS,
            "the OS measurement is not a known-good OS image of the device's tenant",
            device_id=device_id,
            authenticated=True,
        )
    if standing.os_revoked:
        return AttestationFailure(
            FailureCode.OS_REVOKED,
            "the OS image has been revoked; update the device",
            device_id=device_id,
            authenticated=True,
        )
    return standing


def attest(
    engine: Engine,
    token: bytes,
    *,
    now: dt.datetime,
    master_key: bytes,
    challenge_key: ChallengeKey,
    caches: AttestationCaches | None = None,
    limits: VerifierLimits = DEFAULT_LIMITS,
    prune_every: int = NONCE_PRUNE_EVERY,
) -> AttestationOutcome:
    """Verify an EAT and its nonce, check the device and OS, and issue a certificate.

    The checks run in the documented order (docs/api.md): evidence (chain,
    signature, measurements), nonce (issued for this device, not expired, not
    used), device, OS, the capability if any, then the appraisal of the boot
    claims (:mod:`bastion.service.attestation.appraisal`, relaxed per device
    group). On success the consumed nonce, the device update and the
    attestation record are committed in one transaction. On an
    :class:`AttestationFailure` a failure record (and, once the evidence is
    authenticated, the device's last result and the nonce's consumption) is
    committed before the failure is re-raised. Any other error rolls back.

    Args:
        engine: the service database.
        token: the EAT bytes as received.
        now: the verification time (timezone-aware UTC).
        master_key: the service master key, to unseal the tenant CA key.
        challenge_key: the key that authenticates nonces.
        caches: per-process caches (vendor CAs, chain verdicts, tenant signing CAs).
        limits: the verifier's bounds.
        prune_every: prune old consumed nonces in one attestation in this many
            (at random; 1 = every time, 0 = never).

    Returns:
        The issued certificate and what was attested.

    Raises:
        AttestationFailure: the evidence was refused (recorded and committed).
    """
    caches = caches if caches is not None else AttestationCaches()
    evidence: VerifiedEvidence | None = None
    try:
        anchors = caches.trust_anchors(engine, now)
        evidence = verify_evidence(token, trust_anchors=anchors, now=now, limits=limits, cache=caches.chain)
        expires_at = check_nonce(challenge_key, evidence.claims.nonce, evidence.device_id, now=now)
    except AttestationFailure as failure:
        with engine.connect() as conn:
            _record_failure(conn, failure, evidence, now)
        raise
    with engine.connect() as conn:
        return _attest_verified(
            conn,
            evidence,
            expires_at=expires_at,
            now=now,
            master_key=master_key,
            caches=caches,
            prune_every=prune_every,
        )


def _attest_verified(
    conn: Connection,
    evidence: VerifiedEvidence,
    *,
    expires_at: dt.datetime,
    now: dt.datetime,
    master_key: bytes,
    caches: AttestationCaches,
    prune_every: int,
) -> AttestationOutcome:
    device_id = evidence.device_id
    # Reads and the certificate signature come first, so that the write
    # transaction (which holds SQLite's single write lock) stays short. A
    # cached good standing skips the read: the guarded success write below
    # re-checks it atomically.
    standing: repository.DeviceStanding | AttestationFailure | None = caches.good_standing(
        device_id, evidence.os_measurement, now
    )
    if standing is None:
        standing = _judge(repository.device_standing(conn, device_id, evidence.os_measurement), device_id)
        if not isinstance(standing, AttestationFailure):
            caches.remember_standing(device_id, evidence.os_measurement, standing, now)
    presented: PresentedCapability | AttestationFailure | None = None
    if not isinstance(standing, AttestationFailure):
        ca = caches.signing_ca(conn, standing.tenant_id, master_key, now)
        if evidence.claims.capability is not None:
            # Checked once the device and its OS passed (docs/api.md: the capability codes come last).
            presented = check_capability(
                conn,
                evidence.claims.capability,
                device_id=device_id,
                tenant_id=standing.tenant_id,
                tenant_ca=ca.cert,
                older_cas=ca.older,
                now=now,
            )
            if isinstance(presented, AttestationFailure):
                standing = presented
    capability = presented if isinstance(presented, PresentedCapability) else None
    standing, relaxed_findings = _appraise(conn, evidence, standing, capability)
    if not isinstance(standing, AttestationFailure):
        cert = certs.issue_device_cert(
            ca.key, ca.cert, evidence.key_to_certify, tenant_id=standing.tenant_id, device_id=device_id, now=now
        )
    with repository.WriteTransaction(conn) as tx:
        try:
            if prune_every > 0 and secrets.randbelow(prune_every) == 0:
                repository.prune_consumed_nonces(
                    tx, expired_before=now - CONSUMED_NONCE_RETENTION, limit=NONCE_PRUNE_BATCH
                )
            # The nonce is consumed before the device and OS verdicts are applied,
            # so the codes come in the documented order and any authenticated
            # attempt uses its nonce up.
            if not repository.consume_nonce(tx, evidence.claims.nonce, device_id, expires_at):
                raise AttestationFailure(
                    FailureCode.NONCE_REPLAYED,
                    "the nonce was already used (a replay); fetch a new challenge",
                    device_id=device_id,
                    authenticated=True,
                )
            if isinstance(standing, AttestationFailure):
                raise standing
            os_version = standing.os_version or ""
            serial = format(cert.serial_number, "x")
            not_after = cert.not_valid_after_utc
            updated = repository.mark_device_ok(
                tx,
                device_id,
                tenant_id=standing.tenant_id,
                at=now,
                os_version=os_version,
                os_measurement=evidence.os_measurement,
                cert_serial=serial,
                cert_not_after=not_after,
                capability_id=capability.capability_id if capability is not None else None,
                capability_kind=capability.kind.value if capability is not None else None,
                development_group_id=capability.group_id if capability is not None else None,
            )
            if not updated:
                caches.forget_standing(device_id, evidence.os_measurement)
                raise _changed_standing(tx, evidence)
            repository.insert_device_certificate(
                tx,
                ca_id=ca.ca_id,
                tenant_id=standing.tenant_id,
                device_id=device_id,
                serial=serial,
                issued_at=now,
                not_after=not_after,
            )
            repository.insert_attestation(
                tx,
                at=now,
                device_id=device_id,
                tenant_id=standing.tenant_id,
                result="ok",
                reason="ok",
                detail=_success_detail(capability, relaxed_findings)[:MAX_DETAIL_CHARS],
                os_version=os_version,
                os_measurement=evidence.os_measurement,
                cert_serial=serial,
                insecure_no_sandbox=evidence.claims.insecure_no_sandbox,
            )
            tx.commit()
        except AttestationFailure as failure:
            _write_failure(tx, failure, evidence, now)
            tx.commit()
            raise
    return AttestationOutcome(
        device_id=device_id,
        tenant_id=standing.tenant_id,
        certificate=cert,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ca_chain_pem=ca.chain_pems,
        not_after=not_after,
        serial=serial,
        os_version=os_version,
        os_measurement=evidence.os_measurement,
        capability=capability,
    )


def _appraise(
    conn: Connection,
    evidence: VerifiedEvidence,
    standing: repository.DeviceStanding | AttestationFailure,
    capability: PresentedCapability | None,
) -> tuple[repository.DeviceStanding | AttestationFailure, tuple[Finding, ...]]:
    """Appraise the boot claims of a device in good standing (ADR 0014), after its capability.

    Returns:
        The standing (or the refusal, which replaces it) and the findings the
        device's group relaxed. The group's relaxations are read only when a
        rule failed, so a good device's attestation never pays for them.
    """
    if isinstance(standing, AttestationFailure):
        return standing, ()
    development = capability is not None and capability.development
    findings = appraise(evidence, os_security_version=standing.os_security_version, development=development)
    if not findings:
        return standing, ()
    group_id = capability.group_id if capability is not None and capability.development else None
    relaxed = parse_rules(repository.relaxed_rules(conn, evidence.device_id, development_group_id=group_id))
    refusal = verdict(findings, relaxed=relaxed, device_id=evidence.device_id)
    return (refusal, ()) if refusal is not None else (standing, findings)


def _success_detail(capability: PresentedCapability | None, relaxed: tuple[Finding, ...]) -> str:
    """The detail of a success record: the capability, and every rule the device's group relaxed."""
    parts = [capability.describe()] if capability is not None else []
    parts.extend(f"appraisal rule {f.rule.value} relaxed by the device group: {f.detail}" for f in relaxed)
    return "; ".join(parts)


def _changed_standing(tx: repository.WriteTransaction, evidence: VerifiedEvidence) -> AttestationFailure:
    """The refusal when the device's standing changed between the read and the write."""
    verdict = _judge(repository.device_standing(tx, evidence.device_id, evidence.os_measurement), evidence.device_id)
    if isinstance(verdict, AttestationFailure):
        return verdict
    return AttestationFailure(
        FailureCode.DEVICE_UNCLAIMED,
        "the device's claim changed during the attestation; try again",
        device_id=evidence.device_id,
        authenticated=True,
    )


def record_refused(engine: Engine, failure: AttestationFailure, *, now: dt.datetime) -> None:
    """Record a refusal that happened before :func:`attest` ran (e.g. an oversized body)."""
    with engine.connect() as conn:
        _record_failure(conn, failure, None, now)


def _record_failure(
    conn: Connection, failure: AttestationFailure, evidence: VerifiedEvidence | None, now: dt.datetime
) -> None:
    """Commit a failed-attestation record in a write transaction of its own."""
    with repository.WriteTransaction(conn) as tx:
        _write_failure(tx, failure, evidence, now)
        tx.commit()


#: Failures that prove only that the evidence was genuine once, not that the device presents it now.
_NOT_FRESH = frozenset({FailureCode.UNKNOWN_NONCE, FailureCode.NONCE_EXPIRED, FailureCode.NONCE_REPLAYED})


def _write_failure(
    tx: repository.WriteTransaction, failure: AttestationFailure, evidence: VerifiedEvidence | None, now: dt.datetime
) -> None:
    """Write a failed-attestation record (the caller commits it with whatever the attempt already wrote).

    The device's ``last_result`` changes only when the evidence was authenticated
    (chain and signature verified): unauthenticated bytes naming a device must
    not be able to mark that device as failing.
    """
    device_id = failure.device_id or ""
    tenant_id = repository.device_tenant(tx, device_id) if device_id else None
    authenticated = failure.authenticated or evidence is not None
    detail = failure.detail if authenticated else f"unauthenticated evidence: {failure.detail}"
    repository.insert_attestation(
        tx,
        at=now,
        device_id=device_id,
        tenant_id=tenant_id,
        result="failed",
        reason=failure.code.value,
        detail=detail[:MAX_DETAIL_CHARS],
        os_version=evidence.os_version[:MAX_VERSION_CHARS] if evidence is not None else None,
        os_measurement=evidence.os_measurement if evidence is not None else None,
        cert_serial=None,
        insecure_no_sandbox=evidence.claims.insecure_no_sandbox if evidence is not None else None,
    )
    # A nonce failure is old genuine evidence (a replay, a stale or a claim EAT): not the device
    # speaking now, so it must not cut a device off from updates (docs/api.md, "Appraisal").
    if tenant_id is not None and authenticated and failure.code not in _NOT_FRESH:
        repository.mark_device_failed(tx, device_id, at=now, reason=failure.code.value)
