"""Attestation domain logic: challenges, the database-side checks and certificate issuance.

Takes a SQLAlchemy session; does no HTTP. The pure checks (chain, signature,
measurements) live in :mod:`bastion.service.attestation.verifier`.

Example:
    >>> challenge = create_challenge(session, device_id, now=now)  # doctest: +SKIP
    >>> outcome = attest(session, token, now=now, master_key=key,
    ...                  trust_anchors=anchors)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from bastion.crypto import certs
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey
from bastion.service.attestation import repository
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.verifier import (
    DEFAULT_LIMITS,
    ChainCache,
    VerifiedEvidence,
    VerifierLimits,
    verify_evidence,
)
from bastion.service.ca.service import load_signing_ca
from bastion.service.devices.service import validate_device_id

__all__ = [
    "CHALLENGE_TTL",
    "AttestationCaches",
    "AttestationOutcome",
    "IssuedChallenge",
    "SigningCA",
    "attest",
    "create_challenge",
    "load_trust_anchors",
    "record_refused",
]

#: How long a challenge nonce is valid (issue 2: 60 s).
CHALLENGE_TTL = dt.timedelta(seconds=60)
#: Size of a challenge nonce in bytes.
NONCE_BYTES = 32
#: Expired challenges are kept this long, so a late answer gets ``nonce_expired``
#: rather than ``unknown_nonce``; after that they are pruned.
EXPIRED_CHALLENGE_RETENTION = dt.timedelta(minutes=10)
#: At most this many expired challenges are deleted per pruning pass.
CHALLENGE_PRUNE_BATCH = 64
#: A pruning pass runs on one new challenge in this many (at random), so pruning
#: removes up to 64/8 = 8 old rows per challenge on average: it keeps pace with
#: issuance at an eighth of the cost of pruning every time.
CHALLENGE_PRUNE_EVERY = 8
#: How long the per-process caches of vendor CAs and tenant signing CAs live.
CACHE_TTL = dt.timedelta(seconds=30)
#: Bound on the attestation detail stored in the database.
MAX_DETAIL_CHARS = 500
#: Width of the ``os_version`` columns.
MAX_VERSION_CHARS = 64


@dataclass(frozen=True)
class SigningCA:
    """A tenant CA ready to sign, with its PEM for the ``ca_chain`` answer."""

    key: PrivateKey
    cert: x509.Certificate
    pem: str
    loaded_at: dt.datetime


@dataclass
class AttestationCaches:
    """Per-process caches for the attestation hot path (one per app instance).

    Attributes:
        chain: verified DICE chains (see :class:`ChainCache`).
        ttl: how long vendor CAs and tenant signing CAs are reused before
            being read from the database again.
    """

    chain: ChainCache = field(default_factory=ChainCache)
    ttl: dt.timedelta = CACHE_TTL
    _anchors: tuple[tuple[x509.Certificate, ...], dt.datetime] | None = None
    _signing: dict[str, SigningCA] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fresh(self, loaded_at: dt.datetime, now: dt.datetime) -> bool:
        return loaded_at <= now < loaded_at + self.ttl

    def trust_anchors(self, session: Session, now: dt.datetime) -> tuple[x509.Certificate, ...]:
        """Return the trusted vendor CAs, re-reading the table at most once per TTL."""
        with self._lock:
            cached = self._anchors
        if cached is not None and self._fresh(cached[1], now):
            return cached[0]
        anchors = load_trust_anchors(session)
        with self._lock:
            self._anchors = (anchors, now)
        return anchors

    def signing_ca(self, session: Session, tenant_id: str, master_key: bytes, now: dt.datetime) -> SigningCA:
        """Return the tenant's signing CA, unsealing it at most once per TTL."""
        with self._lock:
            cached = self._signing.get(tenant_id)
        if cached is not None and self._fresh(cached.loaded_at, now):
            return cached
        loaded = _load_signing_ca(session, tenant_id, master_key, now)
        with self._lock:
            self._signing[tenant_id] = loaded
        return loaded

    def clear(self) -> None:
        """Drop every cached value (after trusting a vendor or rotating a tenant CA)."""
        with self._lock:
            self._anchors = None
            self._signing.clear()
        self.chain.clear()


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


def _load_signing_ca(session: Session, tenant_id: str, master_key: bytes, now: dt.datetime) -> SigningCA:
    key, cert = load_signing_ca(session, tenant_id, master_key)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return SigningCA(key=key, cert=cert, pem=pem, loaded_at=now)


def load_trust_anchors(session: Session) -> tuple[x509.Certificate, ...]:
    """Return every trusted vendor CA certificate from the ``vendor_cas`` table.

    A row that does not parse is skipped: it can never anchor a chain, and one
    bad row must not stop every device from attesting.
    """
    anchors: list[x509.Certificate] = []
    for pem in repository.vendor_ca_pems(session):
        try:
            anchors.append(certs.load_certificate_pem(pem.encode("ascii")))
        except (CryptoError, UnicodeEncodeError):
            continue
    return tuple(anchors)


@dataclass(frozen=True)
class IssuedChallenge:
    """A challenge as handed to the device."""

    nonce: bytes
    device_id: str
    expires_at: dt.datetime


def create_challenge(
    session: Session,
    device_id: str,
    *,
    now: dt.datetime,
    ttl: dt.timedelta = CHALLENGE_TTL,
    prune_every: int = CHALLENGE_PRUNE_EVERY,
) -> IssuedChallenge:
    """Issue a single-use nonce bound to ``device_id``, valid for ``ttl``, and commit it.

    On one call in ``prune_every`` (at random) it also deletes a bounded batch
    of challenges that expired long ago.

    Raises:
        InvalidDeviceId: ``device_id`` is not 64 lowercase hex characters.
    """
    validate_device_id(device_id)
    challenge = IssuedChallenge(nonce=secrets.token_bytes(NONCE_BYTES), device_id=device_id, expires_at=now + ttl)
    try:
        if prune_every <= 1 or secrets.randbelow(prune_every) == 0:
            repository.prune_challenges(
                session, expired_before=now - EXPIRED_CHALLENGE_RETENTION, limit=CHALLENGE_PRUNE_BATCH
            )
        repository.insert_challenge(session, challenge.nonce, device_id, challenge.expires_at)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return challenge


def _consume_nonce(session: Session, nonce: bytes, device_id: str, now: dt.datetime) -> None:
    """Consume the challenge; only one concurrent attempt can get its row."""
    row = repository.consume_challenge(session, nonce)
    if row is None:
        raise AttestationFailure(
            FailureCode.UNKNOWN_NONCE,
            "the nonce is unknown: it was never issued, was already used (a replay), "
            "or expired long ago; fetch a new challenge",
            device_id=device_id,
            authenticated=True,
        )
    bound_device, expires_at = row
    if not hmac.compare_digest(bound_device.encode(), device_id.encode()):
        raise AttestationFailure(
            FailureCode.NONCE_DEVICE_MISMATCH,
            "the nonce was issued to another device",
            device_id=device_id,
            authenticated=True,
        )
    if now >= expires_at:
        raise AttestationFailure(
            FailureCode.NONCE_EXPIRED,
            "the nonce has expired; fetch a new challenge",
            device_id=device_id,
            authenticated=True,
        )


def _judge(
    standing: repository.DeviceStanding | None, device_id: str
) -> repository.DeviceStanding | AttestationFailure:
    """The standing if the device and its OS are good, else the refusal (DESIGN.md step 3)."""
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
    session: Session,
    token: bytes,
    *,
    now: dt.datetime,
    master_key: bytes,
    trust_anchors: Sequence[x509.Certificate],
    limits: VerifierLimits = DEFAULT_LIMITS,
    caches: AttestationCaches | None = None,
) -> AttestationOutcome:
    """Verify an EAT, consume its nonce, check the device and OS, and issue a certificate.

    One transaction: on success the nonce deletion, the device update, the
    attestation record and the certificate are committed together. On an
    :class:`AttestationFailure` a failure record (and, once the evidence is
    authenticated, the device's last result and the nonce's consumption) is
    committed before the failure is re-raised. Any other error rolls back.

    Args:
        session: a database session with no pending work.
        token: the EAT bytes as received.
        now: the verification time (timezone-aware UTC).
        master_key: the service master key, to unseal the tenant CA key.
        trust_anchors: the trusted vendor CA certificates.
        limits: the verifier's bounds.
        caches: per-process caches (chain verdicts, tenant signing CAs).

    Returns:
        The issued certificate and what was attested.

    Raises:
        AttestationFailure: the evidence was refused (recorded and committed).
    """
    caches = caches if caches is not None else AttestationCaches()
    evidence: VerifiedEvidence | None = None
    try:
        evidence = verify_evidence(token, trust_anchors=trust_anchors, now=now, limits=limits, cache=caches.chain)
        device_id = evidence.device_id
        # Reads and the certificate signature come first, so that the write
        # transaction (which holds SQLite's single write lock) stays short.
        standing = _judge(repository.device_standing(session, device_id, evidence.os_measurement), device_id)
        if not isinstance(standing, AttestationFailure):
            ca = caches.signing_ca(session, standing.tenant_id, master_key, now)
            cert = certs.issue_device_cert(
                ca.key, ca.cert, evidence.key_to_certify, tenant_id=standing.tenant_id, device_id=device_id, now=now
            )
        # The nonce is checked (and consumed) before the device and OS verdicts are
        # applied, so the codes come in the documented order.
        _consume_nonce(session, evidence.claims.nonce, device_id, now)
        if isinstance(standing, AttestationFailure):
            raise standing
        os_version = standing.os_version or ""
        serial = format(cert.serial_number, "x")
        not_after = cert.not_valid_after_utc
        repository.mark_device_ok(
            session,
            device_id,
            at=now,
            os_version=os_version,
            os_measurement=evidence.os_measurement,
            cert_serial=serial,
            cert_not_after=not_after,
        )
        repository.insert_attestation(
            session,
            at=now,
            device_id=device_id,
            tenant_id=standing.tenant_id,
            result="ok",
            reason="ok",
            detail="",
            os_version=os_version,
            os_measurement=evidence.os_measurement,
            cert_serial=serial,
        )
        session.commit()
    except AttestationFailure as failure:
        _record_failure(session, failure, evidence, now)
        raise
    except BaseException:
        session.rollback()
        raise
    return AttestationOutcome(
        device_id=device_id,
        tenant_id=standing.tenant_id,
        certificate=cert,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ca_chain_pem=(ca.pem,),
        not_after=not_after,
        serial=serial,
        os_version=os_version,
        os_measurement=evidence.os_measurement,
    )


def record_refused(session: Session, failure: AttestationFailure, *, now: dt.datetime) -> None:
    """Record a refusal that happened before :func:`attest` ran (e.g. an oversized body)."""
    _record_failure(session, failure, None, now)


def _record_failure(
    session: Session, failure: AttestationFailure, evidence: VerifiedEvidence | None, now: dt.datetime
) -> None:
    """Commit a failed-attestation record, keeping whatever the attempt already did.

    The device's ``last_result`` changes only when the evidence was authenticated
    (chain and signature verified): unauthenticated bytes naming a device must
    not be able to mark that device as failing.
    """
    try:
        device_id = failure.device_id or ""
        tenant_id = repository.device_tenant(session, device_id) if device_id else None
        authenticated = failure.authenticated or evidence is not None
        detail = failure.detail if authenticated else f"unauthenticated evidence: {failure.detail}"
        repository.insert_attestation(
            session,
            at=now,
            device_id=device_id,
            tenant_id=tenant_id,
            result="failed",
            reason=failure.code.value,
            detail=detail[:MAX_DETAIL_CHARS],
            os_version=evidence.os_version[:MAX_VERSION_CHARS] if evidence is not None else None,
            os_measurement=evidence.os_measurement if evidence is not None else None,
            cert_serial=None,
        )
        if tenant_id is not None and authenticated:
            repository.mark_device_failed(session, device_id, at=now, reason=failure.code.value)
        session.commit()
    except BaseException:
        session.rollback()
        raise
