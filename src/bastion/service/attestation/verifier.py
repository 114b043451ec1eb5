"""Pure verification of a device's attestation evidence (an EAT). No database, no I/O.

The checks run in the order of docs/design.md ("Attestation", step 3) and docs/api.md:

1. decode the EAT within a size bound;
2. verify the chain Alias <- DeviceID <- a trusted vendor CA, with the DICE
   profile on top of the X.509 checks: the DeviceID certificate is a CA with
   ``pathlen:0``, the Alias certificate is an end entity carrying DiceTcbInfo;
3. the ``ueid`` claim is the UEID of the DeviceID public key;
4. the COSE signature verifies under the Alias certificate's public key;
5. the EAT measurements equal the Alias certificate's DiceTcbInfo ``fwids``.
   The certificate is authoritative: it is signed by the DeviceID key, which
   only the boot ROM can use, whereas the claims are signed by the Alias key
   that the running OS's monitor holds.

Nonce freshness, the device's claim and the known-good OS list need the
database and are checked by :mod:`bastion.service.attestation.service`.

Example:
    >>> evidence = verify_evidence(token, trust_anchors=[vendor_ca], now=now)  # doctest: +SKIP
    >>> evidence.device_id, evidence.os_measurement  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hmac
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto import certs, cose, eat, keys
from bastion.crypto.errors import CryptoError, InvalidSignature
from bastion.service.attestation.errors import AttestationFailure, FailureCode

__all__ = [
    "DEFAULT_LIMITS",
    "OS_COMPONENT",
    "ChainCache",
    "VerifiedEvidence",
    "VerifierLimits",
    "verify_evidence",
]

#: The measurement component whose digest identifies the OS image (docs/api.md).
OS_COMPONENT = "os"
#: The DICE chain in the ``x5chain`` header: [Alias, DeviceID].
_CHAIN_LENGTH = 2


@dataclass(frozen=True)
class VerifierLimits:
    """Safety bounds of the verifier.

    Attributes:
        max_evidence_bytes: the largest EAT accepted (docs/api.md: 16 KiB).
        chain_cache_entries: how many verified (DeviceID, Alias) pairs
            :class:`ChainCache` remembers.
    """

    max_evidence_bytes: int = eat.DEFAULT_MAX_EAT_BYTES
    chain_cache_entries: int = 16_384


#: The limits used when none are given.
DEFAULT_LIMITS = VerifierLimits()


@dataclass(frozen=True)
class VerifiedEvidence:
    """Evidence whose chain, signature and measurements have been verified.

    Attributes:
        device_id: lowercase hex SHA-256 of the DeviceID public key.
        claims: the EAT claims (authenticated).
        os_measurement: lowercase hex digest of the ``os`` measurement.
        os_version: the ``swversion`` claim.
        alias_cert: the Alias certificate from the chain.
        device_id_cert: the DeviceID certificate from the chain.
        vendor_ca: the trust anchor that terminated the chain.
        tcb_info: the Alias certificate's DiceTcbInfo.
        key_to_certify: the public key the device wants certified (valid P-256).
    """

    device_id: str
    claims: eat.EatClaims
    os_measurement: str
    os_version: str
    alias_cert: x509.Certificate
    device_id_cert: x509.Certificate
    vendor_ca: x509.Certificate
    tcb_info: certs.TcbInfo
    key_to_certify: keys.PublicKey


@dataclass(frozen=True)
class _ChainOk:
    """A DICE chain that verified, with everything derived from its exact DER bytes."""

    alias: x509.Certificate
    device_id_cert: x509.Certificate
    alias_key: keys.PublicKey
    device_id: str
    ueid: bytes
    anchor: x509.Certificate
    tcb_info: certs.TcbInfo
    not_before: dt.datetime  # the latest not-before of Alias, DeviceID and anchor
    not_after: dt.datetime  # the earliest not-after of the three


class ChainCache:
    """A bounded, thread-safe LRU of DICE chains that already verified.

    A repeat attestation from the same chip and firmware presents the same
    Alias and DeviceID certificates, so they need not be parsed, nor their two
    signatures verified, again: the entry keeps the parsed certificates, the
    Alias public key, the device ID and UEID. Only successes are stored; the
    key is the exact DER of both certificates; a hit still checks the validity
    windows at ``now`` and that the anchor which terminated the chain is still
    trusted.
    """

    def __init__(self, max_entries: int = VerifierLimits.chain_cache_entries) -> None:
        """Create an empty cache holding at most ``max_entries`` chains."""
        self._max = max_entries
        self._entries: OrderedDict[tuple[bytes, bytes], _ChainOk] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Return the number of cached chains."""
        return len(self._entries)

    def get(self, key: tuple[bytes, bytes]) -> _ChainOk | None:
        """Return the cached verdict for ``key`` and mark it recently used."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[bytes, bytes], entry: _ChainOk) -> None:
        """Remember a verified chain, evicting the least recently used one if full."""
        if self._max <= 0:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every chain (e.g. after the set of trusted vendor CAs changed)."""
        with self._lock:
            self._entries.clear()


def _fail(
    code: FailureCode, detail: str, device_id: str | None = None, *, authenticated: bool = False
) -> AttestationFailure:
    return AttestationFailure(code, detail, device_id=device_id, authenticated=authenticated)


def _p256_key(cert: x509.Certificate, what: str, device_id: str | None) -> keys.PublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _fail(FailureCode.UNTRUSTED_CHAIN, f"the {what} certificate key is not P-256", device_id)
    return key


def _verify_dice_chain(
    alias_der: bytes,
    device_id_der: bytes,
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> _ChainOk:
    """Parse and verify Alias <- DeviceID <- anchor and the DICE profile constraints."""
    try:
        alias = certs.load_certificate_der(alias_der)
        device_id_cert = certs.load_certificate_der(device_id_der)
    except CryptoError as exc:
        raise _fail(
            FailureCode.MALFORMED_EVIDENCE,
            f"x5chain holds a certificate that does not parse ({exc}); the device must present the DeviceID "
            "certificate from its silicon vendor and the Alias certificate its boot chain issued",
        ) from exc
    device_key = _p256_key(device_id_cert, "DeviceID", None)
    device_id = keys.device_id_from_public_key(device_key)
    alias_key = _p256_key(alias, "Alias", device_id)
    try:
        anchor = certs.verify_chain([alias, device_id_cert], trust_anchors, now=now)
    except CryptoError as exc:
        raise _fail(
            FailureCode.UNTRUSTED_CHAIN,
            f"the certificate chain does not verify to a trusted vendor CA: {exc}",
            device_id,
        ) from exc
    try:
        dev_bc = device_id_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise _fail(FailureCode.UNTRUSTED_CHAIN, "the DeviceID certificate has no basicConstraints", device_id) from exc
    if not dev_bc.ca or dev_bc.path_length != 0:
        raise _fail(FailureCode.UNTRUSTED_CHAIN, "the DeviceID certificate must be a CA with pathlen 0", device_id)
    try:
        alias_bc = alias.extensions.get_extension_for_class(x509.BasicConstraints).value
        alias_is_ca = alias_bc.ca
    except x509.ExtensionNotFound:
        alias_is_ca = False
    if alias_is_ca:
        raise _fail(FailureCode.UNTRUSTED_CHAIN, "the Alias certificate must not be a CA", device_id)
    try:
        tcb_info = certs.tcb_info_from_cert(alias)
    except CryptoError as exc:
        raise _fail(
            FailureCode.UNTRUSTED_CHAIN, "the Alias certificate carries no valid DiceTcbInfo", device_id
        ) from exc
    window = (alias, device_id_cert, anchor)
    return _ChainOk(
        alias=alias,
        device_id_cert=device_id_cert,
        alias_key=alias_key,
        device_id=device_id,
        ueid=keys.ueid_from_public_key(device_key),
        anchor=anchor,
        tcb_info=tcb_info,
        not_before=max(c.not_valid_before_utc for c in window),
        not_after=min(c.not_valid_after_utc for c in window),
    )


def _check_cached(entry: _ChainOk, trust_anchors: Sequence[x509.Certificate], now: dt.datetime) -> bool:
    """True if a cached chain verdict still holds at ``now`` for these anchors."""
    if not entry.not_before <= now <= entry.not_after:
        return False
    return any(entry.anchor == anchor for anchor in trust_anchors)


def _os_measurement(claims: eat.EatClaims, device_id: str) -> str:
    os_digests = [m.digest for m in claims.measurements if m.component == OS_COMPONENT]
    if len(os_digests) != 1:
        raise _fail(
            FailureCode.MALFORMED_EVIDENCE,
            f"the evidence must carry exactly one '{OS_COMPONENT}' measurement",
            device_id,
            authenticated=True,
        )
    return os_digests[0].hex()


def verify_evidence(
    token: bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    limits: VerifierLimits = DEFAULT_LIMITS,
    cache: ChainCache | None = None,
) -> VerifiedEvidence:
    """Verify an EAT's DICE chain, signature and measurements.

    Args:
        token: the EAT bytes as received.
        trust_anchors: the trusted silicon vendor CA certificates.
        now: the verification time (timezone-aware UTC).
        limits: the size bounds.
        cache: an optional :class:`ChainCache` to skip re-verifying known chains.

    Returns:
        The verified evidence.

    Raises:
        AttestationFailure: with the code of the first check that failed.
    """
    # 1. Decode, bounded. The key to certify is checked to be a P-256 point in
    # step 5, once the evidence is authenticated (the point is loaded only once).
    if len(token) > limits.max_evidence_bytes:
        raise _fail(FailureCode.EVIDENCE_TOO_LARGE, f"evidence is larger than {limits.max_evidence_bytes} bytes")
    try:
        message, claims = eat.decode_eat(token, max_size=limits.max_evidence_bytes, verify_key_point=False)
    except CryptoError as exc:
        raise _fail(FailureCode.MALFORMED_EVIDENCE, f"the evidence is not a valid Bastion EAT: {exc}") from exc
    if len(message.x5chain) != _CHAIN_LENGTH:
        raise _fail(FailureCode.MALFORMED_EVIDENCE, "x5chain must hold exactly [Alias cert, DeviceID cert]")
    alias_der, device_id_der = message.x5chain

    # 2. Chain: Alias <- DeviceID <- trusted vendor CA (cached on exact DER).
    cache_key = (device_id_der, alias_der)
    entry = cache.get(cache_key) if cache is not None else None
    if entry is None or not _check_cached(entry, trust_anchors, now):
        entry = _verify_dice_chain(alias_der, device_id_der, trust_anchors, now)
        if cache is not None:
            cache.put(cache_key, entry)
    device_id = entry.device_id

    # 3. The UEID names the DeviceID key (RFC 9711 4.2.1).
    if not hmac.compare_digest(claims.ueid, entry.ueid):
        raise _fail(FailureCode.UEID_MISMATCH, "the ueid claim is not the DeviceID key's UEID", device_id)

    # 4. The EAT is signed by the Alias key (RFC 9052 4.4).
    try:
        cose.verify_sign1(message, entry.alias_key)
    except InvalidSignature as exc:
        raise _fail(
            FailureCode.BAD_SIGNATURE, "the EAT is not signed by the Alias certificate's key", device_id
        ) from exc

    # 5. The claimed measurements are the ones the DeviceID key certified.
    fwids = entry.tcb_info.fwids
    claimed = [m.digest for m in claims.measurements]
    if (
        len(fwids) != len(claimed)
        or any(f.hash_alg != certs.OID_SHA256 for f in fwids)
        or not all(hmac.compare_digest(f.digest, d) for f, d in zip(fwids, claimed, strict=True))
    ):
        raise _fail(
            FailureCode.MEASUREMENT_MISMATCH,
            "the EAT measurements differ from the Alias certificate's DiceTcbInfo",
            device_id,
            authenticated=True,
        )
    os_measurement = _os_measurement(claims, device_id)
    try:
        key_to_certify = keys.load_public_key_bytes(claims.key_to_certify)
    except CryptoError as exc:
        raise _fail(
            FailureCode.MALFORMED_EVIDENCE,
            "the key to certify is not a P-256 public key",
            device_id,
            authenticated=True,
        ) from exc
    return VerifiedEvidence(
        device_id=device_id,
        claims=claims,
        os_measurement=os_measurement,
        os_version=claims.swversion,
        alias_cert=entry.alias,
        device_id_cert=entry.device_id_cert,
        vendor_ca=entry.anchor,
        tcb_info=entry.tcb_info,
        key_to_certify=key_to_certify,
    )
