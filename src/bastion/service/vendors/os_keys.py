"""The service-wide trust store of OS-publisher keys: who may sign a known-good OS image.

Devices pin the OS publisher's key in their boot configuration and check every
OS image against it; the service checks the same signature at upload
(:func:`bastion.service.osimages.service.publish_os_image`), so a damaged or
foreign package never becomes a known-good reference value. Managed locally on
the service host (``bastion service trust-os-publisher``), like vendor CAs:
only the public half is accepted, and nothing of a private key is stored or echoed.

Example:
    >>> trust_os_publisher(session, pem, name="Acme OS", now=now)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PublicKey, load_public_key_pem, public_key_pem
from bastion.images.package import key_id
from bastion.service.errors import InvalidRequest
from bastion.service.models import OsPublisherKey
from bastion.service.vendors._trust import MAX_TRUST_NAME, add_once

__all__ = [
    "MAX_OS_KEY_PEM_BYTES",
    "OsKeyResult",
    "list_os_publishers",
    "os_publisher_key",
    "trust_os_publisher",
]

#: Bound on an OS-publisher public key PEM.
MAX_OS_KEY_PEM_BYTES = 8 * 1024
#: Bound on a key's label.
MAX_OS_KEY_NAME = MAX_TRUST_NAME
_PRIVATE_MARKER = b"PRIVATE KEY"


@dataclass(frozen=True)
class OsKeyResult:
    """The trusted OS-publisher key, and whether this call added it."""

    key: OsPublisherKey
    added: bool


def trust_os_publisher(
    session: Session, pem: bytes, *, name: str | None, now: dt.datetime, actor: str = "cli:local"
) -> OsKeyResult:
    """Trust a P-256 public key (SubjectPublicKeyInfo PEM) to sign OS images (idempotent); audited; commit.

    Raises:
        InvalidRequest: a private key (``private_key_refused``), over the size bound,
            or not a P-256 public key (``invalid_key``).
    """
    if _PRIVATE_MARKER in pem:
        raise InvalidRequest(
            "this is a private key; the service takes only the public half. "
            "Pass the os-signing.pub.pem that 'bastion vendor init' wrote, and keep the private key offline",
            code="private_key_refused",
        )
    if len(pem) > MAX_OS_KEY_PEM_BYTES:
        raise InvalidRequest(f"the key PEM is larger than {MAX_OS_KEY_PEM_BYTES} bytes", code="invalid_key")
    try:
        key = load_public_key_pem(pem)
    except CryptoError as exc:
        raise InvalidRequest(f"not a P-256 public key PEM: {exc}", code="invalid_key") from exc
    kid = key_id(key).hex()
    label = (name or f"os-publisher {kid[:16]}")[:MAX_OS_KEY_NAME]
    row, added = add_once(
        session,
        OsPublisherKey,
        kid,
        lambda: OsPublisherKey(
            key_id=kid, name=label, public_key_pem=public_key_pem(key).decode("ascii"), created_at=now, created_by=actor
        ),
        label=label,
        action="os_publisher.trust",
        target=f"os_publisher_key:{kid}",
        actor=actor,
        now=now,
    )
    return OsKeyResult(key=row, added=added)


def list_os_publishers(session: Session) -> Sequence[OsPublisherKey]:
    """All trusted OS-publisher keys, oldest first."""
    return session.scalars(select(OsPublisherKey).order_by(OsPublisherKey.created_at, OsPublisherKey.key_id)).all()


def os_publisher_key(session: Session, kid: str) -> PublicKey | None:
    """The trusted OS-publisher key with key id ``kid`` (hex), or None.

    A stored row that no longer parses counts as untrusted: it can never verify an image.
    """
    row = session.get(OsPublisherKey, kid)
    if row is None:
        return None
    try:
        return load_public_key_pem(row.public_key_pem.encode("ascii"))
    except CryptoError:
        return None
