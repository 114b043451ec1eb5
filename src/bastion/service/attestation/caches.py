"""Per-process caches of the attestation hot path: vendor CAs, tenant signing CAs, verified chains,
good device standings.

Each cache entry is re-read from the database after :data:`CACHE_TTL`, so a new
trusted vendor or a rotated tenant CA takes effect within that time in every
worker process without any cross-process signalling.

A cached *good* standing (claimed, not revoked, OS known-good) only saves the
read that picks the tenant CA: the success write re-checks all of it
atomically (:func:`bastion.service.attestation.repository.mark_device_ok`), so
a revocation takes effect at once. Refusals are never cached.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from bastion.crypto import certs
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey
from bastion.service.attestation import repository
from bastion.service.attestation.verifier import ChainCache
from bastion.service.ca.service import load_signing_key, trusted_cas

__all__ = ["CACHE_TTL", "STANDING_CACHE_ENTRIES", "AttestationCaches", "SigningCA", "load_trust_anchors"]

#: How long the per-process caches of vendor CAs, tenant signing CAs and good standings live.
CACHE_TTL = dt.timedelta(seconds=30)
#: How many good (device, OS measurement) standings a process remembers.
STANDING_CACHE_ENTRIES = 16_384


@dataclass(frozen=True)
class SigningCA:
    """A tenant CA ready to sign, with its PEM for the ``ca_chain`` answer and its row id
    (recorded with each certificate it issues, for its CRL).

    ``older`` are the tenant's other trusted CAs (in a rotation's overlap, ADR 0012):
    capability files they signed still verify, and the ``ca_chain`` answer lists
    them after the signing CA, so the device trusts the same bundle as everyone else.
    """

    key: PrivateKey
    cert: x509.Certificate
    pem: str
    loaded_at: dt.datetime
    ca_id: int
    older: tuple[x509.Certificate, ...] = ()
    older_pems: tuple[str, ...] = ()

    @property
    def chain_pems(self) -> tuple[str, ...]:
        """The ``ca_chain`` answer: the signing CA, then the older trusted CAs."""
        return (self.pem, *self.older_pems)


def load_trust_anchors(conn: Connection) -> tuple[x509.Certificate, ...]:
    """Return every trusted vendor CA certificate from the ``vendor_cas`` table.

    A row that does not parse is skipped: it can never anchor a chain, and one
    bad row must not stop every device from attesting.
    """
    anchors: list[x509.Certificate] = []
    for pem in repository.vendor_ca_pems(conn):
        try:
            anchors.append(certs.load_certificate_pem(pem.encode("ascii")))
        except (CryptoError, UnicodeEncodeError):
            continue
    return tuple(anchors)


def _load_signing_ca(conn: Connection, tenant_id: str, master_key: bytes, now: dt.datetime) -> SigningCA:
    with Session(bind=conn) as session:
        signing = load_signing_key(session, tenant_id, master_key)
        older_pems = tuple(row.cert_pem for row in trusted_cas(session, tenant_id, now=now) if row.id != signing.ca_id)
    older = tuple(certs.load_certificate_pem(p.encode("ascii")) for p in older_pems)
    pem = signing.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return SigningCA(
        key=signing.key,
        cert=signing.cert,
        pem=pem,
        loaded_at=now,
        ca_id=signing.ca_id,
        older=older,
        older_pems=older_pems,
    )


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
    standing_entries: int = STANDING_CACHE_ENTRIES
    _anchors: tuple[tuple[x509.Certificate, ...], dt.datetime] | None = None
    _signing: dict[str, SigningCA] = field(default_factory=dict)
    _standings: OrderedDict[tuple[str, str], tuple[repository.DeviceStanding, dt.datetime]] = field(
        default_factory=OrderedDict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fresh(self, loaded_at: dt.datetime, now: dt.datetime) -> bool:
        return loaded_at <= now < loaded_at + self.ttl

    def trust_anchors(self, engine: Engine, now: dt.datetime) -> tuple[x509.Certificate, ...]:
        """Return the trusted vendor CAs, re-reading the table at most once per TTL."""
        with self._lock:
            cached = self._anchors
        if cached is not None and self._fresh(cached[1], now):
            return cached[0]
        with engine.connect() as conn:
            anchors = load_trust_anchors(conn)
        with self._lock:
            self._anchors = (anchors, now)
        return anchors

    def signing_ca(self, conn: Connection, tenant_id: str, master_key: bytes, now: dt.datetime) -> SigningCA:
        """Return the tenant's signing CA, unsealing it at most once per TTL."""
        with self._lock:
            cached = self._signing.get(tenant_id)
        if cached is not None and self._fresh(cached.loaded_at, now):
            return cached
        loaded = _load_signing_ca(conn, tenant_id, master_key, now)
        with self._lock:
            self._signing[tenant_id] = loaded
        return loaded

    def forget_signing_ca(self, tenant_id: str) -> None:
        """Drop the tenant's cached signing CA (after a rotation), so the successor signs next."""
        with self._lock:
            self._signing.pop(tenant_id, None)

    def good_standing(self, device_id: str, os_measurement: str, now: dt.datetime) -> repository.DeviceStanding | None:
        """A good standing read within the TTL, or None."""
        with self._lock:
            cached = self._standings.get((device_id, os_measurement))
        if cached is not None and self._fresh(cached[1], now):
            return cached[0]
        return None

    def remember_standing(
        self, device_id: str, os_measurement: str, standing: repository.DeviceStanding, now: dt.datetime
    ) -> None:
        """Remember a good standing (the caller judged it), evicting the oldest entry if full."""
        if self.standing_entries <= 0:
            return
        with self._lock:
            self._standings[device_id, os_measurement] = (standing, now)
            self._standings.move_to_end((device_id, os_measurement))
            while len(self._standings) > self.standing_entries:
                self._standings.popitem(last=False)

    def forget_standing(self, device_id: str, os_measurement: str) -> None:
        """Drop a standing that no longer holds."""
        with self._lock:
            self._standings.pop((device_id, os_measurement), None)

    def clear(self) -> None:
        """Drop every cached value (after trusting a vendor or rotating a tenant CA)."""
        with self._lock:
            self._anchors = None
            self._signing.clear()
            self._standings.clear()
        self.chain.clear()
