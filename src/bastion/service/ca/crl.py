"""Per-CA CRLs: signed from committed state, stored on the CA row, re-signed before they expire.

Each trusted tenant CA (the signing CA and any CA in its rotation overlap) has
one current CRL. It is (re)signed when:

* it does not exist yet, or less than :attr:`CrlPolicy.refresh_margin` of its
  life is left (the background task in :mod:`bastion.service.ca.refresh`, and
  on read);
* a certificate of that CA was revoked after it was signed (on every
  revocation, right after the revoking commit; the background task catches up
  if that publish was lost, e.g. to a crash: commit first, then publish).

Publishing is idempotent and safe to run concurrently: the CRL number is taken
with one atomic ``UPDATE ... RETURNING`` that holds the row until commit, so
numbers only increase (RFC 5280 5.2.3). A retired CA gets no more CRLs (ADR 0012).

Example:
    >>> crls = current_crls(session, tenant_id, master_key=key, now=now)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from bastion.crypto.crl import MAX_CRL_ENTRIES, build_crl, crl_der, load_crl
from bastion.crypto.errors import CryptoError
from bastion.service.ca.revocation import revoked_entries
from bastion.service.ca.service import load_ca_key, trusted_cas
from bastion.service.errors import CrlTooLarge, ServiceError
from bastion.service.models import DeviceCertificate, TenantCA

__all__ = [
    "DEFAULT_CRL_POLICY",
    "CrlPolicy",
    "PublishedCrl",
    "current_crls",
    "publish_crl",
    "publish_tenant_crls",
    "refresh_all_crls",
]


@dataclass(frozen=True)
class CrlPolicy:
    """The bounds of CRL publication.

    Attributes:
        lifetime: thisUpdate to nextUpdate of every CRL (RFC 5280 5.1.2.5); a
            relying party that cannot fetch a new one fails closed after this.
        refresh_margin: re-sign once less than this is left (half the lifetime,
            like the TUF timestamp, so one missed refresh run costs nothing).
        max_entries: most revoked certificates one CRL lists.
    """

    lifetime: dt.timedelta = dt.timedelta(hours=24)
    refresh_margin: dt.timedelta = dt.timedelta(hours=12)
    max_entries: int = MAX_CRL_ENTRIES


DEFAULT_CRL_POLICY = CrlPolicy()


@dataclass(frozen=True)
class PublishedCrl:
    """One CA's current CRL."""

    ca_id: int
    der: bytes
    number: int
    this_update: dt.datetime
    next_update: dt.datetime

    def load(self) -> x509.CertificateRevocationList:
        """The parsed CRL."""
        return load_crl(self.der)


def publish_crl(
    session: Session, ca: TenantCA, *, master_key: bytes, now: dt.datetime, policy: CrlPolicy = DEFAULT_CRL_POLICY
) -> PublishedCrl:
    """Sign and store a fresh CRL for ``ca`` from committed revocations; commit.

    Raises:
        CrlTooLarge: more revoked certificates than ``policy.max_entries``.
        SealedKeyError: the CA key does not open under ``master_key``.
    """
    if session.in_transaction():
        session.commit()  # read the revocations the caller committed, in a new transaction
    number = session.execute(
        update(TenantCA)
        .where(TenantCA.id == ca.id)
        .values(crl_number=TenantCA.crl_number + 1)
        .returning(TenantCA.crl_number)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    try:
        entries = revoked_entries(session, ca.id, now=now, limit=policy.max_entries + 1)
        if len(entries) > policy.max_entries:
            raise CrlTooLarge(
                f"tenant CA {ca.id} has more than {policy.max_entries} revoked, unexpired certificates; "
                "its previous CRL stays published until enough of them expire"
            )
        signing = load_ca_key(ca, master_key)
        next_update = now + policy.lifetime
        try:
            crl = build_crl(signing.key, signing.cert, entries, number=number, this_update=now, next_update=next_update)
        except CryptoError as exc:  # only well-formed entries are stored; kept as a typed failure
            raise CrlTooLarge(f"the CRL of tenant CA {ca.id} cannot be built: {exc}") from exc
        der = crl_der(crl)
        session.execute(
            update(TenantCA)
            .where(TenantCA.id == ca.id)
            .values(crl_der=der, crl_this_update=now, crl_next_update=next_update)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    session.expire(ca)
    return PublishedCrl(ca_id=ca.id, der=der, number=number, this_update=now, next_update=next_update)


def _needs_publish(ca: TenantCA, *, now: dt.datetime, policy: CrlPolicy, session: Session) -> bool:
    if ca.crl_der is None or ca.crl_next_update is None or ca.crl_this_update is None:
        return True
    if ca.crl_next_update - now < policy.refresh_margin:
        return True
    return bool(
        session.scalar(
            select(
                exists().where(
                    DeviceCertificate.ca_id == ca.id,
                    # >=: a revocation in the same instant as the signature may have missed it.
                    DeviceCertificate.revoked_at >= ca.crl_this_update,
                )
            )
        )
    )


def _stored(ca: TenantCA) -> PublishedCrl:
    if ca.crl_der is None or ca.crl_this_update is None or ca.crl_next_update is None:  # pragma: no cover
        raise ServiceError("the CA has no CRL yet")
    return PublishedCrl(
        ca_id=ca.id,
        der=ca.crl_der,
        number=ca.crl_number,
        this_update=ca.crl_this_update,
        next_update=ca.crl_next_update,
    )


def publish_tenant_crls(
    session: Session,
    tenant_id: str,
    *,
    master_key: bytes,
    now: dt.datetime,
    policy: CrlPolicy = DEFAULT_CRL_POLICY,
    force: bool = False,
) -> int:
    """Re-sign the CRL of each of the tenant's trusted CAs that needs it (``force``: all); commit.

    Returns:
        How many CRLs were signed.
    """
    signed = 0
    for ca in trusted_cas(session, tenant_id, now=now):
        if force or _needs_publish(ca, now=now, policy=policy, session=session):
            publish_crl(session, ca, master_key=master_key, now=now, policy=policy)
            signed += 1
    return signed


def current_crls(
    session: Session, tenant_id: str, *, master_key: bytes, now: dt.datetime, policy: CrlPolicy = DEFAULT_CRL_POLICY
) -> list[PublishedCrl]:
    """The current CRL of every trusted CA of the tenant, signing CA first; missing or stale ones are signed first."""
    publish_tenant_crls(session, tenant_id, master_key=master_key, now=now, policy=policy)
    return [_stored(ca) for ca in trusted_cas(session, tenant_id, now=now)]


def refresh_all_crls(
    session: Session, *, master_key: bytes, now: dt.datetime, policy: CrlPolicy = DEFAULT_CRL_POLICY
) -> int:
    """Re-sign every trusted CA's CRL that needs it (the background task); commit.

    Every tenant is tried; if any failed, the first failure is raised afterwards.

    Returns:
        How many CRLs were signed.
    """
    tenant_ids = session.scalars(
        select(TenantCA.tenant_id)
        .where(TenantCA.active.is_(True), or_(TenantCA.retire_at.is_(None), TenantCA.retire_at > now))
        .distinct()
        .order_by(TenantCA.tenant_id)
    ).all()
    signed = 0
    failed: list[ServiceError] = []
    for tenant_id in tenant_ids:
        try:
            signed += publish_tenant_crls(session, tenant_id, master_key=master_key, now=now, policy=policy)
        except ServiceError as exc:  # one tenant's failure must not leave the others' CRLs to expire
            failed.append(exc)
    if failed:
        raise failed[0]
    return signed
