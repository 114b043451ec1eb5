"""The service-wide trust store of silicon vendor CAs.

Managed locally on the service host (``bastion service trust-vendor``); the
attestation slice reads it with :func:`trusted_vendor_certs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.crypto.certs import certificate_fingerprint, load_certificate_pem
from bastion.crypto.errors import CryptoError
from bastion.service.errors import InvalidRequest
from bastion.service.models import VendorCA
from bastion.service.vendors._trust import MAX_TRUST_NAME, add_once

__all__ = ["TrustResult", "list_vendors", "trust_vendor", "trusted_vendor_certs"]

MAX_VENDOR_NAME = MAX_TRUST_NAME


@dataclass(frozen=True)
class TrustResult:
    """The trusted vendor CA, and whether this call added it."""

    vendor: VendorCA
    added: bool


def trust_vendor(
    session: Session, pem: bytes, *, name: str | None, now: dt.datetime, actor: str = "cli:local"
) -> TrustResult:
    """Add a vendor CA certificate to the trust store (idempotent); audited; commit.

    Raises:
        InvalidRequest: not a PEM certificate, or not a CA certificate.
    """
    try:
        cert = load_certificate_pem(pem)
    except CryptoError as exc:
        raise InvalidRequest(f"not a PEM certificate: {exc}", code="invalid_certificate") from exc
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidRequest(
            "this certificate is not a CA (basicConstraints CA:TRUE is missing)", code="invalid_certificate"
        )
    fingerprint = certificate_fingerprint(cert)
    label = (name or cert.subject.rfc4514_string() or fingerprint)[:MAX_VENDOR_NAME]
    row, added = add_once(
        session,
        VendorCA,
        fingerprint,
        lambda: VendorCA(
            fingerprint=fingerprint,
            name=label,
            cert_pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
            created_at=now,
        ),
        label=label,
        action="vendor.trust",
        target=f"vendor_ca:{fingerprint}",
        actor=actor,
        now=now,
    )
    return TrustResult(vendor=row, added=added)


def list_vendors(session: Session) -> Sequence[VendorCA]:
    """All trusted vendor CAs, oldest first."""
    return session.scalars(select(VendorCA).order_by(VendorCA.created_at, VendorCA.fingerprint)).all()


#: Bound on the per-process cache of parsed vendor CA certificates.
PARSED_CACHE_SIZE = 256
_parsed: dict[str, x509.Certificate] = {}


def trusted_vendor_certs(session: Session) -> list[x509.Certificate]:
    """The trusted vendor CA certificates, parsed (parsing cached per process by fingerprint)."""
    certs = []
    for fingerprint, pem in session.execute(select(VendorCA.fingerprint, VendorCA.cert_pem)).tuples():
        cert = _parsed.get(fingerprint)
        if cert is None:
            cert = load_certificate_pem(pem.encode("ascii"))
            if len(_parsed) >= PARSED_CACHE_SIZE:
                _parsed.clear()
            _parsed[fingerprint] = cert
        certs.append(cert)
    return certs
