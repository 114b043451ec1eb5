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
  from its contents, and it is signed with deterministic ECDSA (RFC 6979), so
  the same firmware on the same chip yields the same certificate, byte for byte.
* **Device certificate**: issued by the tenant CA after attestation. Subject
  ``O=<tenant id>, CN=<device id>``; URI SAN
  ``urn:bastion:tenant:<tenant id>:device:<device id>``; EKU clientAuth; valid 24 h.

The DiceTcbInfo ASN.1 (TCG DICE Attestation Architecture, section 6.1.1) is in
:mod:`bastion.crypto._tcb_info`; its public names are re-exported here.

:func:`verify_chain` raises :class:`CertificateError` whose ``reason`` is one of
``empty_chain``, ``chain_too_long``, ``not_yet_valid``, ``expired``,
``issuer_mismatch``, ``bad_signature``, ``not_ca``, ``key_usage``,
``path_length``, ``unknown_critical_extension``, ``malformed``,
``untrusted_anchor``.

Example:
    >>> import datetime as dt
    >>> from bastion.crypto.keys import generate_private_key
    >>> now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> ca_key, dev_key = generate_private_key(), generate_private_key()
    >>> ca = make_ca("Tenant CA", ca_key, now=now)
    >>> cert = issue_device_cert(ca_key, ca, dev_key.public_key(), tenant_id="t1",
    ...                          device_id="d1", now=now)
    >>> verify_chain([cert], [ca], now=now) == ca
    True
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from bastion.crypto._tcb_info import (
    MAX_TCB_INFO_BYTES,
    OID_SHA256,
    Fwid,
    TcbInfo,
    decode_tcb_info,
    encode_tcb_info,
)
from bastion.crypto.errors import CertificateError, MalformedInput
from bastion.crypto.keys import PrivateKey, PublicKey, device_id_from_public_key, public_key_bytes

__all__ = [
    "ALIAS_NOT_AFTER",
    "ALIAS_NOT_BEFORE",
    "CA_LIFETIME",
    "CLOCK_SKEW",
    "DEVICE_CERT_LIFETIME",
    "DEVICE_ID_CERT_LIFETIME",
    "MAX_CERT_BYTES",
    "MAX_CHAIN_DEPTH",
    "MAX_TCB_INFO_BYTES",
    "OID_SHA256",
    "OID_TCG_DICE_TCB_INFO",
    "Fwid",
    "TcbInfo",
    "certificate_der",
    "certificate_fingerprint",
    "certificate_pem",
    "decode_tcb_info",
    "device_cert_uri",
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
DEVICE_CERT_LIFETIME = dt.timedelta(hours=24)
CA_LIFETIME = dt.timedelta(days=730)
DEVICE_ID_CERT_LIFETIME = dt.timedelta(days=365 * 25)
#: Certificates we issue at "now" start this much earlier, so a relying party
#: whose clock is a few minutes behind ours does not see them as not yet valid.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: Fixed validity of every Alias certificate. The Alias cert is re-derived at
#: each boot by a device that has no trusted clock, and it is "revoked" by a
#: firmware change (which changes the Alias key), not by time. RFC 5280 section
#: 4.1.2.5 says a certificate with no well-defined expiration date should use
#: notAfter 99991231235959Z; a fixed notBefore keeps the certificate a pure
#: function of (DeviceID key, Alias key, TcbInfo).
ALIAS_NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ALIAS_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
#: Bound on any certificate we parse.
MAX_CERT_BYTES = 16 * 1024
#: Bound on a PEM certificate (base64 of MAX_CERT_BYTES plus armour).
MAX_CERT_PEM_BYTES = 2 * MAX_CERT_BYTES
#: Longest chain (leaf first, trust anchor excluded) verify_chain accepts.
MAX_CHAIN_DEPTH = 4
#: Critical extensions this module understands (RFC 5280 section 4.2: a
#: certificate with any other critical extension must be rejected).
_UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)
_SIGN_HASH = hashes.SHA256()
#: X.509 serial numbers are positive and at most 20 octets (RFC 5280 4.1.2.2).
_SERIAL_BITS = 159


def _utc(now: dt.datetime) -> dt.datetime:
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _issuer_aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def make_ca(
    common_name: str,
    key: PrivateKey,
    *,
    now: dt.datetime,
    lifetime: dt.timedelta = CA_LIFETIME,
    organization: str | None = None,
) -> x509.Certificate:
    """Create a self-signed CA certificate for ``key``.

    Valid from ``now - CLOCK_SKEW`` to ``now + lifetime``.
    """
    now = _utc(now)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attrs)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(key, _SIGN_HASH)


def issue_device_id_cert(
    ca_key: PrivateKey, ca_cert: x509.Certificate, device_key: PublicKey, *, now: dt.datetime
) -> x509.Certificate:
    """Issue the DeviceID certificate for a chip's UDS-derived public key.

    Subject ``CN=<device id>`` (hex SHA-256 of the SEC1 public key); ``CA:TRUE,
    pathlen:0`` and keyCertSign, because the DeviceID key signs the Alias cert.
    Valid from ``now - CLOCK_SKEW`` for DEVICE_ID_CERT_LIFETIME: the key lives as
    long as the chip, and the vendor CA's own validity bounds the chain anyway.
    """
    now = _utc(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id_from_public_key(device_key))]))
        .issuer_name(ca_cert.subject)
        .public_key(device_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + DEVICE_ID_CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(device_key), critical=False)
        .add_extension(_issuer_aki(ca_cert), critical=False)
    )
    return builder.sign(ca_key, _SIGN_HASH)


def alias_serial_number(alias_key: PublicKey, tcb_info_der: bytes) -> int:
    """Return the deterministic Alias certificate serial: SHA-256(alias key || TcbInfo), 159 bits."""
    digest = hashlib.sha256(public_key_bytes(alias_key) + tcb_info_der).digest()
    return (int.from_bytes(digest, "big") >> (256 - _SERIAL_BITS)) or 1


def issue_alias_cert(
    device_id_key: PrivateKey,
    device_id_cert: x509.Certificate,
    alias_key: PublicKey,
    tcb_info: TcbInfo,
    *,
    now: dt.datetime,
) -> x509.Certificate:
    """Issue the Alias certificate, carrying ``tcb_info`` in a DiceTcbInfo extension.

    The result is a pure function of its inputs except ``now``, which is
    accepted for symmetry with the other issuers and not used: the validity is
    fixed (:data:`ALIAS_NOT_BEFORE` .. :data:`ALIAS_NOT_AFTER`, see there), the
    serial is :func:`alias_serial_number`, and the signature is RFC 6979.
    """
    del now  # see docstring: the Alias cert must not depend on a device clock
    tcb_der = encode_tcb_info(tcb_info)
    alias_id = hashlib.sha256(public_key_bytes(alias_key)).hexdigest()
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, alias_id),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id_from_public_key(device_id_key.public_key())),
                ]
            )
        )
        .issuer_name(device_id_cert.subject)
        .public_key(alias_key)
        .serial_number(alias_serial_number(alias_key, tcb_der))
        .not_valid_before(ALIAS_NOT_BEFORE)
        .not_valid_after(ALIAS_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(alias_key), critical=False)
        .add_extension(_issuer_aki(device_id_cert), critical=False)
        .add_extension(x509.UnrecognizedExtension(OID_TCG_DICE_TCB_INFO, tcb_der), critical=False)
    )
    return builder.sign(device_id_key, _SIGN_HASH, ecdsa_deterministic=True)


def device_cert_uri(tenant_id: str, device_id: str) -> str:
    """Return the URI SAN of a device certificate."""
    return f"urn:bastion:tenant:{tenant_id}:device:{device_id}"


def issue_device_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    device_key: PublicKey,
    *,
    tenant_id: str,
    device_id: str,
    now: dt.datetime,
    lifetime: dt.timedelta = DEVICE_CERT_LIFETIME,
) -> x509.Certificate:
    """Issue a tenant device certificate for TLS client auth.

    Valid from ``now - CLOCK_SKEW`` (so relying parties with a slightly slow
    clock accept it at once) to ``now + lifetime``.
    """
    now = _utc(now)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, tenant_id),
            x509.NameAttribute(NameOID.COMMON_NAME, device_id),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(device_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(device_cert_uri(tenant_id, device_id))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(device_key), critical=False)
        .add_extension(_issuer_aki(ca_cert), critical=False)
    )
    return builder.sign(ca_key, _SIGN_HASH)


def tcb_info_from_cert(cert: x509.Certificate) -> TcbInfo:
    """Return the DiceTcbInfo of a certificate.

    Raises:
        CertificateError: the certificate has no DiceTcbInfo extension.
        MalformedInput: the extension does not decode.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(OID_TCG_DICE_TCB_INFO)
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate has no DiceTcbInfo extension", reason="no_tcb_info") from exc
    except (ValueError, x509.DuplicateExtension) as exc:
        raise MalformedInput("certificate extensions do not parse") from exc
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography knows no TCG OIDs
        raise MalformedInput("DiceTcbInfo extension has an unexpected type")
    return decode_tcb_info(value.value)


# --- chain verification ------------------------------------------------------


class _Where:
    """Names a certificate in an error message; the subject is rendered only on failure."""

    def __init__(self, index: int | None, cert: x509.Certificate) -> None:
        self._index = index
        self._cert = cert

    def __str__(self) -> str:
        label = "trust anchor" if self._index is None else f"certificate {self._index}"
        try:
            return f"{label} ({self._cert.subject.rfc4514_string()})"
        except ValueError:  # pragma: no cover - malformed names are rejected on load
            return label


def _describe(index: int | None, cert: x509.Certificate) -> _Where:
    return _Where(index, cert)


def _check_extensions(where: _Where, cert: x509.Certificate) -> x509.Extensions:
    try:
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CertificateError(f"{where}: extensions do not parse", reason="malformed") from exc
    for ext in extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
            raise CertificateError(
                f"{where}: unknown critical extension {ext.oid.dotted_string}",
                reason="unknown_critical_extension",
            )
    return extensions


def _check_validity(where: _Where, cert: x509.Certificate, now: dt.datetime) -> None:
    # RFC 5280 section 6.1.3 (a)(2): the certificate is valid at the current time.
    if now < cert.not_valid_before_utc:
        raise CertificateError(f"{where}: not yet valid at {now.isoformat()}", reason="not_yet_valid")
    if now > cert.not_valid_after_utc:
        raise CertificateError(f"{where}: expired at {now.isoformat()}", reason="expired")


def _check_issuer(where: _Where, issuer: x509.Certificate, cas_below: int) -> None:
    """Check that ``issuer`` may issue certificates, ``cas_below`` CA certs beneath it."""
    extensions = _check_extensions(where, issuer)
    # RFC 5280 section 6.1.4 (k): an issuer must be a CA.
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CertificateError(f"{where}: issuer is not a CA (basicConstraints CA:TRUE missing)", reason="not_ca")
    # RFC 5280 section 6.1.4 (n): keyCertSign must be set when keyUsage is present;
    # the Bastion profile requires keyUsage on every issuer.
    try:
        ku = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is None or not ku.key_cert_sign:
        raise CertificateError(f"{where}: issuer lacks keyUsage keyCertSign", reason="key_usage")
    # RFC 5280 section 6.1.4 (m): pathLenConstraint bounds the CA certs below.
    if bc.path_length is not None and cas_below > bc.path_length:
        raise CertificateError(f"{where}: pathlen {bc.path_length} exceeded", reason="path_length")


def _check_signed_by(where: _Where, cert: x509.Certificate, issuer: x509.Certificate) -> None:
    # RFC 5280 section 6.1.3 (a)(4): the issuer name matches the issuer's subject.
    if cert.issuer != issuer.subject:
        raise CertificateError(f"{where}: issuer name does not match the next certificate", reason="issuer_mismatch")
    try:
        cert.verify_directly_issued_by(issuer)
    except _CryptographyInvalidSignature as exc:
        raise CertificateError(
            f"{where}: signature does not verify under its issuer's key", reason="bad_signature"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{where}: cannot be verified by its issuer ({exc})", reason="bad_signature") from exc


def verify_chain(
    chain: Sequence[x509.Certificate], trust_anchors: Sequence[x509.Certificate], *, now: dt.datetime
) -> x509.Certificate:
    """Verify ``chain`` (leaf first) up to one of ``trust_anchors``.

    Checks, for each link: the issuer name matches, the signature verifies
    (``verify_directly_issued_by``), every certificate is within its validity
    window at ``now``, every issuer has ``CA:TRUE`` and keyCertSign and
    respects pathlen, and the last certificate is issued by a trust anchor.
    No certificate may carry a critical extension this module does not know.
    A trust anchor included as the last element of ``chain`` is ignored there.
    A naive ``now`` is taken as UTC.

    Returns:
        The trust anchor that terminated the chain.

    Raises:
        CertificateError: the chain is empty, too long (more than 4), or any
            check fails; the message says which certificate and which check,
            and ``reason`` names the check.
    """
    now = _utc(now)
    certs = list(chain)
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in trust_anchors}
    if len(certs) > 1 and certs[-1].public_bytes(serialization.Encoding.DER) in anchor_ders:
        certs.pop()
    if not certs:
        raise CertificateError("certificate chain is empty", reason="empty_chain")
    if len(certs) > MAX_CHAIN_DEPTH:
        raise CertificateError(f"certificate chain is longer than {MAX_CHAIN_DEPTH}", reason="chain_too_long")
    for index, cert in enumerate(certs):
        where = _describe(index, cert)
        _check_extensions(where, cert)
        _check_validity(where, cert, now)
        if index > 0:
            _check_issuer(where, cert, cas_below=index - 1)
            _check_signed_by(_describe(index - 1, certs[index - 1]), certs[index - 1], cert)
    last = certs[-1]
    where = _describe(len(certs) - 1, last)
    candidates = [a for a in trust_anchors if a.subject == last.issuer]
    if not candidates:
        raise CertificateError(f"{where}: not issued by any trust anchor", reason="untrusted_anchor")
    failure: CertificateError | None = None
    for anchor in candidates:
        try:
            anchor_where = _describe(None, anchor)
            _check_validity(anchor_where, anchor, now)
            _check_issuer(anchor_where, anchor, cas_below=len(certs) - 1)
            _check_signed_by(where, last, anchor)
        except CertificateError as exc:
            failure = exc
            continue
        return anchor
    if failure is None:  # pragma: no cover - candidates is non-empty
        raise CertificateError(f"{where}: not issued by any trust anchor", reason="untrusted_anchor")
    raise failure


# --- loading and encoding ------------------------------------------------------


def _fully_parsed(cert: x509.Certificate) -> x509.Certificate:
    """Decode the parts ``cryptography`` parses lazily, so that a bad one is refused on load.

    ``cryptography`` decodes the public key and the extensions only when they
    are first read, and raises exceptions of its own then: an unknown key
    algorithm (``UnsupportedAlgorithm``), an EC point off its curve
    (``ValueError``), an extension that appears twice (``DuplicateExtension``,
    which RFC 5280 section 4.2 forbids). Reading them here turns each into a
    :class:`MalformedInput` at the boundary, before any caller relies on them.
    """
    try:
        cert.public_key()
    except UnsupportedAlgorithm as exc:
        raise MalformedInput("certificate public key uses an unsupported key type") from exc
    except ValueError as exc:
        raise MalformedInput("certificate public key is invalid (for example a point off its curve)") from exc
    try:
        _ = cert.extensions
    except x509.DuplicateExtension as exc:
        # RFC 5280 section 4.2: a certificate must not include more than one instance of an extension.
        raise MalformedInput(f"certificate has a duplicate extension {exc.oid.dotted_string}") from exc
    except ValueError as exc:
        raise MalformedInput("certificate extensions do not parse") from exc
    return cert


def load_certificate_der(data: bytes) -> x509.Certificate:
    """Load a DER certificate (bounded). Raises MalformedInput."""
    if len(data) > MAX_CERT_BYTES:
        raise MalformedInput(f"certificate is larger than {MAX_CERT_BYTES} bytes")
    try:
        cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise MalformedInput("not a DER X.509 certificate") from exc
    return _fully_parsed(cert)


def load_certificate_pem(data: bytes) -> x509.Certificate:
    """Load a PEM certificate (bounded). Raises MalformedInput."""
    if len(data) > MAX_CERT_PEM_BYTES:
        raise MalformedInput(f"certificate PEM is larger than {MAX_CERT_PEM_BYTES} bytes")
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise MalformedInput("not a PEM X.509 certificate") from exc
    return _fully_parsed(cert)


def certificate_der(cert: x509.Certificate) -> bytes:
    """Return the DER encoding of a certificate."""
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_pem(cert: x509.Certificate) -> bytes:
    """Return the PEM encoding of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """Return the lowercase hex SHA-256 of a certificate's DER encoding."""
    return hashlib.sha256(certificate_der(cert)).hexdigest()
