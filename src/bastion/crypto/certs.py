"""X.509 certificates in the DICE profile, and the chain checks Bastion needs.

Certificates:

* **CA** (vendor CA, tenant CA): self-signed, ``CA:TRUE``, keyCertSign + cRLSign.
* **DeviceID**: issued by the vendor CA at manufacture for the UDS-derived key.
  Subject ``CN=<device id>``; ``CA:TRUE, pathlen:0`` (it signs the Alias cert);
  long-lived.
* **Alias**: issued by the DeviceID key at every boot for the Alias key.
  ``CA:FALSE``, digitalSignature. Carries the TCG DiceTcbInfo extension
  (OID 2.23.133.5.4.1, non-critical) whose ``fwids`` are the boot-stage
  measurements. Its serial number and validity are derived deterministically
  from its contents, so the same firmware on the same chip yields the same cert.
* **Device certificate**: issued by the tenant CA after attestation. Subject
  ``O=<tenant id>, CN=<device id>``; URI SAN
  ``urn:bastion:tenant:<tenant id>:device:<device id>``; EKU clientAuth; valid 24 h.

DiceTcbInfo (TCG DICE Attestation Architecture, section 6.1.1)::

    DiceTcbInfo ::= SEQUENCE {
        vendor     [0] IMPLICIT UTF8String OPTIONAL,
        model      [1] IMPLICIT UTF8String OPTIONAL,
        version    [2] IMPLICIT UTF8String OPTIONAL,
        svn        [3] IMPLICIT INTEGER OPTIONAL,
        layer      [4] IMPLICIT INTEGER OPTIONAL,
        index      [5] IMPLICIT INTEGER OPTIONAL,
        fwids      [6] IMPLICIT FWIDLIST OPTIONAL,
        flags      [7] IMPLICIT OperationalFlags OPTIONAL,
        vendorInfo [8] IMPLICIT OCTET STRING OPTIONAL,
        type       [9] IMPLICIT OCTET STRING OPTIONAL }
    FWIDLIST ::= SEQUENCE SIZE (1..MAX) OF FWID
    FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING }

STUB: the implementation is being written; signatures below are the contract.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from bastion.crypto.keys import PrivateKey, PublicKey

__all__ = [
    "DEVICE_CERT_LIFETIME",
    "OID_TCG_DICE_TCB_INFO",
    "Fwid",
    "TcbInfo",
    "certificate_fingerprint",
    "decode_tcb_info",
    "encode_tcb_info",
    "issue_alias_cert",
    "issue_device_cert",
    "issue_device_id_cert",
    "load_certificate_der",
    "load_certificate_pem",
    "make_ca",
    "tcb_info_from_cert",
    "verify_chain",
]

OID_TCG_DICE_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1")
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
DEVICE_CERT_LIFETIME = dt.timedelta(hours=24)
CA_LIFETIME = dt.timedelta(days=730)
DEVICE_ID_CERT_LIFETIME = dt.timedelta(days=365 * 25)
#: Bound on any certificate we parse.
MAX_CERT_BYTES = 16 * 1024
#: Bound on a DiceTcbInfo extension value.
MAX_TCB_INFO_BYTES = 4096


@dataclass(frozen=True)
class Fwid:
    """One firmware ID: a hash algorithm OID (dotted string) and a digest."""

    hash_alg: str
    digest: bytes


@dataclass(frozen=True)
class TcbInfo:
    """The fields of DiceTcbInfo that Bastion uses."""

    vendor: str | None = None
    model: str | None = None
    version: str | None = None
    svn: int | None = None
    layer: int | None = None
    fwids: tuple[Fwid, ...] = field(default_factory=tuple)


def encode_tcb_info(info: TcbInfo) -> bytes:
    """DER-encode a DiceTcbInfo."""
    raise NotImplementedError


def decode_tcb_info(der: bytes) -> TcbInfo:
    """Decode a DiceTcbInfo (bounded by MAX_TCB_INFO_BYTES).

    Raises:
        MalformedInput: not a valid DiceTcbInfo DER encoding.
    """
    raise NotImplementedError


def make_ca(common_name: str, key: PrivateKey, *, now: dt.datetime, lifetime: dt.timedelta = CA_LIFETIME, organization: str | None = None) -> x509.Certificate:
    """Create a self-signed CA certificate for ``key``."""
    raise NotImplementedError


def issue_device_id_cert(ca_key: PrivateKey, ca_cert: x509.Certificate, device_key: PublicKey, *, now: dt.datetime) -> x509.Certificate:
    """Issue the DeviceID certificate for a chip's UDS-derived public key."""
    raise NotImplementedError


def issue_alias_cert(device_id_key: PrivateKey, device_id_cert: x509.Certificate, alias_key: PublicKey, tcb_info: TcbInfo, *, now: dt.datetime) -> x509.Certificate:
    """Issue the Alias certificate, carrying ``tcb_info`` in a DiceTcbInfo extension."""
    raise NotImplementedError


def issue_device_cert(ca_key: PrivateKey, ca_cert: x509.Certificate, device_key: PublicKey, *, tenant_id: str, device_id: str, now: dt.datetime, lifetime: dt.timedelta = DEVICE_CERT_LIFETIME) -> x509.Certificate:
    """Issue a tenant device certificate for TLS client auth."""
    raise NotImplementedError


def tcb_info_from_cert(cert: x509.Certificate) -> TcbInfo:
    """Return the DiceTcbInfo of a certificate.

    Raises:
        CertificateError: the certificate has no DiceTcbInfo extension.
        MalformedInput: the extension does not decode.
    """
    raise NotImplementedError


def verify_chain(chain: Sequence[x509.Certificate], trust_anchors: Sequence[x509.Certificate], *, now: dt.datetime) -> x509.Certificate:
    """Verify ``chain`` (leaf first) up to one of ``trust_anchors``.

    Checks, for each link: the issuer name matches, the signature verifies
    (``verify_directly_issued_by``), every certificate is within its validity
    window at ``now``, every issuer has ``CA:TRUE`` and keyCertSign and
    respects pathlen, and the last certificate is issued by a trust anchor.

    Returns:
        The trust anchor that terminated the chain.

    Raises:
        CertificateError: the chain is empty, too long (more than 4), or any
            check fails; the message says which certificate and which check.
    """
    raise NotImplementedError


def load_certificate_der(data: bytes) -> x509.Certificate:
    """Load a DER certificate (bounded). Raises MalformedInput."""
    raise NotImplementedError


def load_certificate_pem(data: bytes) -> x509.Certificate:
    """Load a PEM certificate (bounded). Raises MalformedInput."""
    raise NotImplementedError


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """Return the lowercase hex SHA-256 of a certificate's DER encoding."""
    raise NotImplementedError
