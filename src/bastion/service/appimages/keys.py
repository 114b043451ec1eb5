"""Registering the public half of a tenant's app-signing key.

The service never holds a private key that can make a device run code
(issue 3, section 1): a PEM that carries a private key is refused outright,
and nothing of it is stored or echoed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PublicKey, load_public_key_pem, public_key_pem
from bastion.images.package import key_id
from bastion.service.audit.service import record, record_denied
from bastion.service.auth.service import Principal
from bastion.service.errors import Conflict, InvalidRequest
from bastion.service.fleet.policy import parse_name
from bastion.service.models import AppSigningKey

__all__ = ["list_keys", "register_key", "tenant_app_keys"]

_PRIVATE_MARKER = "PRIVATE KEY"


def register_key(
    session: Session, who: Principal, name: str, pem: str, *, now: dt.datetime, max_pem_bytes: int
) -> AppSigningKey:
    """Register a P-256 public key (SubjectPublicKeyInfo PEM) as one of the tenant's app-signing keys; commit.

    Raises:
        InvalidRequest: a private key (``private_key_refused``), or not a P-256 public key PEM.
        Conflict: the key is registered already (``duplicate_key``).
    """
    name = parse_name(name, "key")
    if _PRIVATE_MARKER in pem:
        record_denied(
            session,
            now=now,
            tenant_id=who.tenant_id,
            actor=who.actor,
            action="app_key.register",
            target=f"app_key:{name}",
            detail="a private key was sent; refused and not stored",
        )
        raise InvalidRequest(
            "this is a private key; the service accepts only the public half. "
            "Register the .pub.pem file that 'bastion keys create' wrote, and keep the private key offline",
            code="private_key_refused",
        )
    data = pem.encode("utf-8", "replace")
    if len(data) > max_pem_bytes:
        raise InvalidRequest(f"the key PEM is larger than {max_pem_bytes} bytes", code="invalid_key")
    try:
        key = load_public_key_pem(data)
    except CryptoError as exc:
        raise InvalidRequest(f"not a P-256 public key PEM: {exc}", code="invalid_key") from exc
    kid = key_id(key).hex()
    row = AppSigningKey(
        tenant_id=who.tenant_id,
        key_id=kid,
        name=name,
        public_key_pem=public_key_pem(key).decode("ascii"),
        created_at=now,
        created_by=who.actor,
    )
    duplicate = Conflict(f"this key ({kid[:16]}…) is already registered for your tenant", code="duplicate_key")
    if session.scalar(
        select(AppSigningKey.id).where(AppSigningKey.tenant_id == who.tenant_id, AppSigningKey.key_id == kid)
    ):
        raise duplicate
    session.add(row)
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="app_key.register",
        target=f"app_key:{kid}",
        detail=f"name={name}",
    )
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise duplicate from exc
    return row


def list_keys(session: Session, who: Principal) -> Sequence[AppSigningKey]:
    """The caller's registered app-signing keys, oldest first."""
    query = select(AppSigningKey).where(AppSigningKey.tenant_id == who.tenant_id).order_by(AppSigningKey.id)
    return session.scalars(query).all()


def tenant_app_keys(session: Session, tenant_id: str) -> dict[str, PublicKey]:
    """The tenant's app-signing public keys by key id (hex)."""
    rows = session.scalars(select(AppSigningKey).where(AppSigningKey.tenant_id == tenant_id)).all()
    return {row.key_id: load_public_key_pem(row.public_key_pem.encode("ascii")) for row in rows}
