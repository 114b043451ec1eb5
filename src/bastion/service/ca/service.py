"""Tenant CAs: P-256, two years, private key sealed under the master key.

The sealed key's associated data is the tenant id, so a sealed key copied to
another tenant's row does not open. Decrypted keys are cached per process in
a small bounded LRU keyed by (tenant id, CA row id, master-key fingerprint).

A tenant may hold several CAs after a rotation (docs/adr/0012-tenant-ca-lifecycle.md):
the *signing* CA is the newest one; an older CA whose ``retire_at`` has not
passed is still *trusted* (in the bundle ``GET /ca`` serves, and it keeps a
CRL); after ``retire_at`` it is *retired*.

Example (attestation slice)::

    key, cert = load_signing_ca(session, tenant_id, settings.master_key)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Select, bindparam, or_, select
from sqlalchemy.orm import Session

from bastion.crypto.aead import open_sealed, seal
from bastion.crypto.certs import CA_LIFETIME, load_certificate_pem, make_ca
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, generate_private_key, load_private_key_pem, private_key_pem
from bastion.service.errors import NotFound, SealedKeyError
from bastion.service.models import TenantCA

__all__ = [
    "CA_KEY_CACHE_SIZE",
    "SigningKey",
    "ca_state",
    "create_tenant_ca",
    "load_ca_key",
    "load_signing_ca",
    "load_signing_key",
    "tenant_ca_pem",
    "trust_bundle_pem",
    "trusted_ca_pems",
    "trusted_cas",
]

#: How many decrypted tenant CA keys one process keeps.
CA_KEY_CACHE_SIZE = 256


def _aad(tenant_id: str) -> bytes:
    return f"bastion:tenant-ca:{tenant_id}".encode()


#: Longest common name RFC 5280 (ub-common-name) allows.
_MAX_CN = 64


def _ca_common_name(tenant_name: str, generation: int) -> str:
    """``Bastion tenant CA <name>``; a successor adds `` <generation>`` so each CA has its own subject."""
    suffix = f" {generation}" if generation > 1 else ""
    return f"Bastion tenant CA {tenant_name}"[: _MAX_CN - len(suffix)] + suffix


def create_tenant_ca(
    session: Session, tenant_id: str, tenant_name: str, *, master_key: bytes, now: dt.datetime, generation: int = 1
) -> TenantCA:
    """Create the tenant's CA and add its row (sealed key) to the session; no commit.

    ``generation`` is 1 for the tenant's first CA and counts up with each
    rotation; it makes each successor's subject distinct from its predecessor's.
    """
    key = generate_private_key()
    cert = make_ca(_ca_common_name(tenant_name, generation), key, now=now, lifetime=CA_LIFETIME, organization=tenant_id)
    row = TenantCA(
        tenant_id=tenant_id,
        cert_pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
        sealed_key=seal(master_key, private_key_pem(key), aad=_aad(tenant_id)),
        not_after=cert.not_valid_after_utc,
        active=True,
        created_at=now,
    )
    session.add(row)
    return row


def _active_ca_query(tenant_id: str) -> Select[TenantCA]:
    return (
        select(TenantCA)
        .where(TenantCA.tenant_id == tenant_id, TenantCA.active.is_(True))
        .order_by(TenantCA.id.desc())
        .limit(1)
    )


def tenant_ca_pem(session: Session, tenant_id: str) -> str:
    """Return the PEM of the tenant's active CA certificate.

    Raises:
        NotFound: the tenant has no active CA.
    """
    row = session.scalars(_active_ca_query(tenant_id)).first()
    if row is None:
        raise NotFound("this tenant has no active CA")
    return row.cert_pem


class _KeyCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int, bytes], tuple[PrivateKey, x509.Certificate]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, bytes]) -> tuple[PrivateKey, x509.Certificate] | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, int, bytes], value: tuple[PrivateKey, x509.Certificate]) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_cache = _KeyCache(CA_KEY_CACHE_SIZE)


@dataclass(frozen=True)
class SigningKey:
    """A tenant CA ready to sign: its row id (recorded with what it issues), key and certificate."""

    ca_id: int
    key: PrivateKey
    cert: x509.Certificate


def load_ca_key(row: TenantCA, master_key: bytes) -> SigningKey:
    """Unseal one tenant CA row (any state; the CRL of a superseded CA is signed with it too).

    Raises:
        SealedKeyError: the sealed key does not open under ``master_key`` (fails closed).
    """
    cache_key = (row.tenant_id, row.id, hashlib.sha256(master_key).digest())
    cached = _cache.get(cache_key)
    if cached is not None:
        return SigningKey(row.id, *cached)
    try:
        key = load_private_key_pem(open_sealed(master_key, row.sealed_key, aad=_aad(row.tenant_id)))
        cert = load_certificate_pem(row.cert_pem.encode("ascii"))
    except CryptoError as exc:
        raise SealedKeyError("the tenant CA key does not open under this master key") from exc
    if cert.public_key() != key.public_key():
        raise SealedKeyError("the tenant CA key does not match its certificate")
    _cache.put(cache_key, (key, cert))
    return SigningKey(row.id, key, cert)


def load_signing_key(session: Session, tenant_id: str, master_key: bytes) -> SigningKey:
    """Return the tenant's signing CA (the newest active one), unsealed, with its row id.

    Raises:
        NotFound: the tenant has no active CA.
        SealedKeyError: the sealed key does not open under ``master_key`` (fails closed).
    """
    row = session.scalars(_active_ca_query(tenant_id)).first()
    if row is None:
        raise NotFound("this tenant has no active CA")
    return load_ca_key(row, master_key)


def load_signing_ca(session: Session, tenant_id: str, master_key: bytes) -> tuple[PrivateKey, x509.Certificate]:
    """Return the tenant's active CA private key and certificate, for issuing device certs.

    Raises:
        NotFound: the tenant has no active CA.
        SealedKeyError: the sealed key does not open under ``master_key`` (fails closed).
    """
    signing = load_signing_key(session, tenant_id, master_key)
    return signing.key, signing.cert


_CAS = TenantCA.__table__.c
#: The tenant's CAs not retired at ``now`` (bound parameters ``tenant_id`` and ``now``), newest first.
_TRUSTED = (
    _CAS.tenant_id == bindparam("tenant_id"),
    _CAS.active.is_(True),
    or_(_CAS.retire_at.is_(None), _CAS.retire_at > bindparam("now")),
)
#: :func:`trusted_cas`' PEMs only, one prebuilt Core statement (it runs for every device-signed request).
_TRUSTED_PEMS = select(_CAS.cert_pem).where(*_TRUSTED).order_by(_CAS.id.desc())


def trusted_cas(session: Session, tenant_id: str, *, now: dt.datetime) -> Sequence[TenantCA]:
    """The tenant's CAs that are not retired at ``now``, newest (the signing CA) first."""
    query = select(TenantCA).where(*_TRUSTED).order_by(TenantCA.id.desc())
    return session.scalars(query, {"tenant_id": tenant_id, "now": now}).all()


def trusted_ca_pems(session: Session, tenant_id: str, *, now: dt.datetime) -> list[str]:
    """The PEMs of :func:`trusted_cas`, in its order (a device's request checks its certificate against them)."""
    rows = session.connection().execute(_TRUSTED_PEMS, {"tenant_id": tenant_id, "now": now})
    return [str(pem) for (pem,) in rows]


def trust_bundle_pem(session: Session, tenant_id: str, *, now: dt.datetime) -> str:
    """The PEM bundle of every trusted tenant CA, signing CA first (``GET /ca``).

    During a rotation's overlap it holds the successor and the CA it supersedes,
    so relying parties accept certificates from either.

    Raises:
        NotFound: the tenant has no trusted CA.
    """
    rows = trusted_cas(session, tenant_id, now=now)
    if not rows:
        raise NotFound("this tenant has no active CA")
    return "".join(row.cert_pem if row.cert_pem.endswith("\n") else row.cert_pem + "\n" for row in rows)


def ca_state(row: TenantCA, signing_id: int | None, *, now: dt.datetime) -> str:
    """``signing``, ``retiring`` (superseded, in its overlap) or ``retired``."""
    if not row.active or (row.retire_at is not None and row.retire_at <= now):
        return "retired"
    return "signing" if row.id == signing_id else "retiring"
