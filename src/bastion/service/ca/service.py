"""Tenant CAs: P-256, two years, private key sealed under the master key.

The sealed key's associated data is the tenant id, so a sealed key copied to
another tenant's row does not open. Decrypted keys are cached per process in
a small bounded LRU keyed by (tenant id, CA row id, master-key fingerprint).

Example (attestation slice)::

    key, cert = load_signing_ca(session, tenant_id, settings.master_key)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from bastion.crypto.aead import open_sealed, seal
from bastion.crypto.certs import CA_LIFETIME, load_certificate_pem, make_ca
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, generate_private_key, load_private_key_pem, private_key_pem
from bastion.service.errors import NotFound, SealedKeyError
from bastion.service.models import TenantCA

__all__ = ["CA_KEY_CACHE_SIZE", "create_tenant_ca", "load_signing_ca", "tenant_ca_pem"]

#: How many decrypted tenant CA keys one process keeps.
CA_KEY_CACHE_SIZE = 256


def _aad(tenant_id: str) -> bytes:
    return f"bastion:tenant-ca:{tenant_id}".encode()


def create_tenant_ca(
    session: Session, tenant_id: str, tenant_name: str, *, master_key: bytes, now: dt.datetime
) -> TenantCA:
    """Create the tenant's CA and add its row (sealed key) to the session; no commit."""
    key = generate_private_key()
    cert = make_ca(f"Bastion tenant CA {tenant_name}", key, now=now, lifetime=CA_LIFETIME, organization=tenant_id)
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


def load_signing_ca(session: Session, tenant_id: str, master_key: bytes) -> tuple[PrivateKey, x509.Certificate]:
    """Return the tenant's active CA private key and certificate, for issuing device certs.

    Raises:
        NotFound: the tenant has no active CA.
        SealedKeyError: the sealed key does not open under ``master_key`` (fails closed).
    """
    row = session.scalars(_active_ca_query(tenant_id)).first()
    if row is None:
        raise NotFound("this tenant has no active CA")
    cache_key = (tenant_id, row.id, hashlib.sha256(master_key).digest())
    cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    try:
        key = load_private_key_pem(open_sealed(master_key, row.sealed_key, aad=_aad(tenant_id)))
        cert = load_certificate_pem(row.cert_pem.encode("ascii"))
    except CryptoError as exc:
        raise SealedKeyError("the tenant CA key does not open under this master key") from exc
    if cert.public_key() != key.public_key():
        raise SealedKeyError("the tenant CA key does not match its certificate")
    _cache.put(cache_key, (key, cert))
    return key, cert
