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
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.crypto import certs
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey
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
from bastion.service.models import Attestation, Challenge, Device, OsImage, VendorCA

__all__ = [
    "CHALLENGE_TTL",
    "AttestationCaches",
    "AttestationOutcome",
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
#: At most this many expired challenges are deleted per new challenge.
CHALLENGE_PRUNE_BATCH = 64
#: How long the per-process caches of vendor CAs and tenant signing CAs live.
CACHE_TTL = dt.timedelta(seconds=30)
#: Bound on the attestation detail stored in the database.
MAX_DETAIL_CHARS = 500


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
    for pem in session.scalars(select(VendorCA.cert_pem)):
        try:
            anchors.append(certs.load_certificate_pem(pem.encode("ascii")))
        except (CryptoError, UnicodeEncodeError):
            continue
    return tuple(anchors)


def create_challenge(
    session: Session, device_id: str, *, now: dt.datetime, ttl: dt.timedelta = CHALLENGE_TTL
) -> Challenge:
    """Issue a single-use nonce bound to ``device_id``, valid for ``ttl``, and commit it.

    Also deletes a bounded batch of challenges that expired long ago.

    Raises:
        InvalidDeviceId: ``device_id`` is not 64 lowercase hex characters.
    """
    validate_device_id(device_id)
    stale = (
        select(Challenge.nonce)
        .where(Challenge.expires_at < now - EXPIRED_CHALLENGE_RETENTION)
        .limit(CHALLENGE_PRUNE_BATCH)
    )
    session.execute(delete(Challenge).where(Challenge.nonce.in_(stale)).execution_options(synchronize_session=False))
    challenge = Challenge(nonce=secrets.token_bytes(NONCE_BYTES), device_id=device_id, expires_at=now + ttl)
    session.add(challenge)
    session.commit()
    return challenge


def _consume_nonce(session: Session, nonce: bytes, device_id: str, now: dt.datetime) -> None:
    """Delete the challenge atomically; only one concurrent attempt can get its row."""
    row = session.execute(
        delete(Challenge)
        .where(Challenge.nonce == nonce)
        .returning(Challenge.device_id, Challenge.expires_at)
        .execution_options(synchronize_session=False)
    ).first()
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


def _check_device_and_os(session: Session, evidence: VerifiedEvidence) -> tuple[Device, OsImage]:
    device = session.get(Device, evidence.device_id)
    if device is None:
        raise AttestationFailure(
            FailureCode.DEVICE_UNCLAIMED,
            "the device is not claimed by any tenant",
            device_id=evidence.device_id,
            authenticated=True,
        )
    if device.revoked_at is not None:
        raise AttestationFailure(
            FailureCode.DEVICE_REVOKED, "the device is revoked", device_id=evidence.device_id, authenticated=True
        )
    os_image = session.scalar(
        select(OsImage).where(OsImage.tenant_id == device.tenant_id, OsImage.measurement == evidence.os_measurement)
    )
    if os_image is None:
        raise AttestationFailure(
            FailureCode.UNKNOWN_OS,
            "the OS measurement is not a known-good OS image of the device's tenant",
            device_id=evidence.device_id,
            authenticated=True,
        )
    if os_image.revoked_at is not None:
        raise AttestationFailure(
            FailureCode.OS_REVOKED,
            "the OS image has been revoked; update the device",
            device_id=evidence.device_id,
            authenticated=True,
        )
    return device, os_image


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
        _consume_nonce(session, evidence.claims.nonce, evidence.device_id, now)
        device, os_image = _check_device_and_os(session, evidence)
        ca = caches.signing_ca(session, device.tenant_id, master_key, now)
        cert = certs.issue_device_cert(
            ca.key,
            ca.cert,
            evidence.key_to_certify,
            tenant_id=device.tenant_id,
            device_id=device.device_id,
            now=now,
        )
        serial = format(cert.serial_number, "x")
        not_after = cert.not_valid_after_utc
        device.last_attested_at = now
        device.last_result = "ok"
        device.last_reason = "ok"
        device.os_version = os_image.version
        device.os_measurement = evidence.os_measurement
        device.cert_serial = serial
        device.cert_not_after = not_after
        session.add(
            Attestation(
                at=now,
                device_id=device.device_id,
                tenant_id=device.tenant_id,
                result="ok",
                reason="ok",
                detail="",
                os_version=os_image.version,
                os_measurement=evidence.os_measurement,
                cert_serial=serial,
            )
        )
        session.commit()
    except AttestationFailure as failure:
        _record_failure(session, failure, evidence, now)
        raise
    except BaseException:
        session.rollback()
        raise
    return AttestationOutcome(
        device_id=device.device_id,
        tenant_id=device.tenant_id,
        certificate=cert,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ca_chain_pem=(ca.pem,),
        not_after=not_after,
        serial=serial,
        os_version=os_image.version,
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
        device = session.get(Device, device_id) if device_id else None
        authenticated = failure.authenticated or evidence is not None
        detail = failure.detail if authenticated else f"unauthenticated evidence: {failure.detail}"
        session.add(
            Attestation(
                at=now,
                device_id=device_id,
                tenant_id=device.tenant_id if device is not None else None,
                result="failed",
                reason=failure.code.value,
                detail=detail[:MAX_DETAIL_CHARS],
                os_version=evidence.os_version[:64] if evidence is not None else None,
                os_measurement=evidence.os_measurement if evidence is not None else None,
                cert_serial=None,
            )
        )
        if device is not None and authenticated:
            device.last_attested_at = now
            device.last_result = "failed"
            device.last_reason = failure.code.value
        session.commit()
    except BaseException:
        session.rollback()
        raise
