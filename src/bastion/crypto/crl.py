"""X.509 certificate revocation lists (RFC 5280 section 5): build, load (bounded), verify.

A tenant CA signs one CRL at a time. It carries the CRL number (5.2.3) and the
issuer's key identifier (5.2.1), a bounded ``nextUpdate`` (5.1.2.5), and for
each revoked certificate its serial, revocation date and reason code (5.3.1).
Expired certificates are left off (5.1.2.6 allows it): a relying party refuses
them anyway, and the list stays as small as the revocations that matter.

Example:
    >>> import datetime as dt
    >>> from bastion.crypto.certs import make_ca
    >>> from bastion.crypto.keys import generate_private_key
    >>> now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> key = generate_private_key()
    >>> ca = make_ca("Tenant CA", key, now=now)
    >>> crl = build_crl(key, ca, [RevokedEntry(0x1234, now, "privilege_withdrawn")],
    ...                 number=1, this_update=now, next_update=now + dt.timedelta(hours=24))
    >>> loaded = load_crl(crl_der(crl))
    >>> verify_crl(loaded, ca, now=now)
    >>> [entry.serial_number for entry in loaded]
    [4660]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto.errors import CertificateError, InvalidSignature, MalformedInput
from bastion.crypto.keys import PrivateKey

__all__ = [
    "MAX_CRLS_IN_BUNDLE",
    "MAX_CRL_BYTES",
    "MAX_CRL_ENTRIES",
    "REASONS",
    "RevokedEntry",
    "build_crl",
    "crl_der",
    "crl_pem",
    "load_crl",
    "load_crl_bundle",
    "verify_crl",
]

#: Largest CRL (DER, or one PEM block) this module parses.
MAX_CRL_BYTES = 4 * 1024 * 1024
#: Most revoked entries one CRL may carry (build and load).
MAX_CRL_ENTRIES = 50_000
#: Most CRLs in one PEM bundle (a tenant trusts at most a few CAs at once).
MAX_CRLS_IN_BUNDLE = 8

#: The RFC 5280 CRLReason values Bastion uses, by the name stored with a revocation.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}

_PEM_BEGIN = b"-----BEGIN X509 CRL-----"
_PEM_END = b"-----END X509 CRL-----"


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate: its serial, when it was revoked, and why (a key of :data:`REASONS`)."""

    serial_number: int
    revoked_at: dt.datetime
    reason: str = "unspecified"


def build_crl(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[RevokedEntry],
    *,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """Sign a CRL for ``ca_cert`` listing ``revoked``.

    Raises:
        MalformedInput: more than :data:`MAX_CRL_ENTRIES` entries, an unknown
            reason, a non-positive number, or ``next_update`` not after ``this_update``.
    """
    if number < 1:
        raise MalformedInput("the CRL number must be positive (RFC 5280 5.2.3)")
    if next_update <= this_update:
        raise MalformedInput("nextUpdate must be after thisUpdate (RFC 5280 5.1.2.5)")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
    )
    for count, entry in enumerate(revoked, start=1):
        if count > MAX_CRL_ENTRIES:
            raise MalformedInput(f"a CRL holds at most {MAX_CRL_ENTRIES} entries")
        reason = REASONS.get(entry.reason)
        if reason is None:
            raise MalformedInput(f"unknown revocation reason {entry.reason!r}")
        revoked_cert = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_number)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(revoked_cert)
    return builder.sign(ca_key, hashes.SHA256())


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Load one CRL, PEM or DER (bounded), and check its entries parse.

    Raises:
        MalformedInput: too large, not a CRL, too many entries, or an entry or
            extension that does not decode.
    """
    if len(data) > MAX_CRL_BYTES:
        raise MalformedInput(f"a CRL is at most {MAX_CRL_BYTES} bytes")
    try:
        pem = data.lstrip().startswith(_PEM_BEGIN)
        crl = x509.load_pem_x509_crl(data) if pem else x509.load_der_x509_crl(data)
        # cryptography decodes entries and extensions lazily: touch them here, so
        # a malformed one fails now, as MalformedInput, and not later elsewhere.
        for count, entry in enumerate(crl, start=1):
            if count > MAX_CRL_ENTRIES:
                raise MalformedInput(f"a CRL holds at most {MAX_CRL_ENTRIES} entries")
            _ = entry.serial_number, entry.revocation_date_utc, list(entry.extensions)
        _ = crl.issuer, crl.last_update_utc, crl.next_update_utc, list(crl.extensions)
    except x509.InvalidVersion as exc:  # not a ValueError (found by fuzz/harnesses/fuzz_crl.py)
        raise MalformedInput("the CRL has an unknown version (RFC 5280 5.1.2.1: v2)") from exc
    except x509.DuplicateExtension as exc:  # not a ValueError either (fuzz/regressions/crl/duplicate-extension)
        raise MalformedInput("the CRL repeats an extension (RFC 5280 5.2: at most one of each)") from exc
    except (ValueError, TypeError) as exc:
        # TypeError: cryptography builds the issuer Name lazily and raises it for an
        # attribute of the wrong ASN.1 type (found by fuzz/harnesses/fuzz_crl.py).
        raise MalformedInput("not a well-formed X.509 CRL") from exc
    return crl


def load_crl_bundle(data: bytes) -> list[x509.CertificateRevocationList]:
    """Load every CRL of a PEM bundle (what ``GET /ca/crl`` serves), bounded.

    Raises:
        MalformedInput: too large, no CRL, more than :data:`MAX_CRLS_IN_BUNDLE`,
            an unterminated block, or a CRL that does not load (:func:`load_crl`).
    """
    if len(data) > MAX_CRL_BYTES:
        raise MalformedInput(f"a CRL bundle is at most {MAX_CRL_BYTES} bytes")
    crls: list[x509.CertificateRevocationList] = []
    start = data.find(_PEM_BEGIN)
    while start != -1:
        end = data.find(_PEM_END, start)
        if end == -1:
            raise MalformedInput("a PEM CRL block has no END line")
        if len(crls) >= MAX_CRLS_IN_BUNDLE:
            raise MalformedInput(f"a CRL bundle holds at most {MAX_CRLS_IN_BUNDLE} CRLs")
        crls.append(load_crl(data[start : end + len(_PEM_END)] + b"\n"))
        start = data.find(_PEM_BEGIN, end)
    if not crls:
        raise MalformedInput("no PEM CRL in the bundle")
    return crls


def verify_crl(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate, *, now: dt.datetime) -> None:
    """Check that ``ca_cert`` signed ``crl`` and that it is current at ``now``.

    Raises:
        CertificateError: another issuer (``issuer_mismatch``), not yet valid
            (``not_yet_valid``) or past its nextUpdate / without one (``expired``).
        InvalidSignature: the signature does not verify under the CA's key.
    """
    if crl.issuer != ca_cert.subject:
        raise CertificateError("the CRL was issued by another CA", reason="issuer_mismatch")
    public_key = ca_cert.public_key()
    try:
        valid = isinstance(public_key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(public_key)
    except (ValueError, UnsupportedAlgorithm) as exc:  # e.g. a signature algorithm cryptography does not know
        raise InvalidSignature("the CRL signature does not verify under the CA key") from exc
    if not valid:
        raise InvalidSignature("the CRL signature does not verify under the CA key")
    if crl.last_update_utc > now:
        raise CertificateError("the CRL's thisUpdate is in the future", reason="not_yet_valid")
    next_update = crl.next_update_utc
    # RFC 5280 5.1.2.5: conforming CRL issuers MUST include nextUpdate.
    if next_update is None or next_update <= now:
        raise CertificateError("the CRL is past its nextUpdate; download a fresh one", reason="expired")


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    """The DER encoding of a CRL."""
    return crl.public_bytes(serialization.Encoding.DER)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    """The PEM encoding of a CRL."""
    return crl.public_bytes(serialization.Encoding.PEM)
