"""The device's attestation client (docs/design.md, "Attestation").

One attempt: fetch a nonce, have the monitor sign an EAT over it that certifies
the device TLS key, send the EAT, and check the certificate that comes back.
The client holds no socket of its own: HTTP goes through an injected
``httpx.Client`` (tests use ``httpx.MockTransport``) and signing through an
injected :class:`Signer` (the monitor). Time is a parameter.

Example:
    >>> client = AttestationClient(http, monitor, key, device_id=did)  # doctest: +SKIP
    >>> credential = client.attest(now=datetime.now(UTC))                # doctest: +SKIP
    >>> renewal_time(credential.certificate, 0.8)                         # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto.certs import load_certificate_pem, verify_chain
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, public_key_bytes
from bastion.monitor.errors import MonitorError
from bastion.os.config import AttestationPolicy
from bastion.os.errors import (
    AttestationRefusedError,
    MonitorFailedError,
    ServiceProtocolError,
    ServiceUnreachableError,
)
from bastion.os.updates.errors import UpdateRefusedError
from bastion.os.updates.pointer import UpdatePointer, parse_update_pointer

__all__ = [
    "CHALLENGE_PATH",
    "EAT_CONTENT_TYPE",
    "SUBMIT_PATH",
    "AttestationClient",
    "DeviceCredential",
    "Signer",
    "renewal_time",
]

CHALLENGE_PATH = "/api/v1/attestation/challenge"
SUBMIT_PATH = "/api/v1/attestation"
EAT_CONTENT_TYPE = "application/eat+cwt"
#: Bound on the nonce the service hands out (RFC 9711 4.1 allows 8..64 bytes).
MAX_NONCE_BYTES = 64
MIN_NONCE_BYTES = 8
#: Bound on the text fields of an error answer that we keep and log.
MAX_ERROR_TEXT = 300

_log = logging.getLogger("bastion.os.attestation")


class Signer(Protocol):
    """What the client needs from the monitor (:class:`bastion.monitor.client.MonitorClient`)."""

    def sign_attestation(
        self,
        *,
        nonce: bytes,
        key_to_certify: bytes,
        installed_apps: Sequence[tuple[str, str]] = (),
        iat: int,
        capability: bytes | None = None,
    ) -> bytes:
        """Return an EAT over ``nonce`` that certifies ``key_to_certify`` (and carries ``capability``)."""
        ...


@dataclass(frozen=True)
class DeviceCredential:
    """What a successful attestation yields.

    Attributes:
        certificate: the device certificate (its key is the device TLS key).
        certificate_pem: the same, as the service sent it.
        ca_chain_pem: the tenant CA chain, PEM, as the service sent it.
        tenant_id: the tenant that owns the device.
        updates: where the device's update repository is (``None``: in no group).
    """

    certificate: x509.Certificate
    certificate_pem: bytes
    ca_chain_pem: tuple[bytes, ...]
    tenant_id: str
    updates: UpdatePointer | None = None

    @property
    def not_before(self) -> dt.datetime:
        """Start of the certificate's validity."""
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        """End of the certificate's validity."""
        return self.certificate.not_valid_after_utc


def renewal_time(certificate: x509.Certificate, fraction: float) -> dt.datetime:
    """When to renew: after ``fraction`` of the certificate's own validity window."""
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return start + (end - start) * fraction


def _text(value: object, limit: int = MAX_ERROR_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else ""


class AttestationClient:
    """Runs attestation attempts against the Security Service.

    Args:
        http: an ``httpx.Client`` whose ``base_url`` is the service URL.
        signer: the monitor (or a fake with the same interface).
        device_key: the device TLS private key; only its public key leaves.
        device_id: this device's ID (hex SHA-256 of the DeviceID public key).
        policy: bounds on the service's answers.
    """

    def __init__(
        self,
        http: httpx.Client,
        signer: Signer,
        device_key: PrivateKey,
        *,
        device_id: str,
        policy: AttestationPolicy | None = None,
    ) -> None:
        self._http = http
        self._signer = signer
        self._public = public_key_bytes(device_key.public_key())
        self._device_id = device_id
        self._policy = policy or AttestationPolicy()

    def _post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """POST and return the JSON object of a 200 answer, reading at most the bound."""
        limit = self._policy.max_response_bytes
        try:
            with self._http.stream("POST", path, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise ServiceProtocolError(f"{path}: answer is larger than {limit} bytes")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ServiceProtocolError(f"{path}: answer is larger than {limit} bytes")
                status = response.status_code
        except httpx.HTTPError as exc:
            raise ServiceUnreachableError(f"{path}: {type(exc).__name__}: cannot reach the service") from exc
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if status >= 500:
            raise ServiceUnreachableError(f"{path}: the service failed with HTTP {status}")
        if status >= 400:
            code = _text(value.get("error")) if isinstance(value, dict) else ""
            detail = _text(value.get("detail")) if isinstance(value, dict) else ""
            raise AttestationRefusedError(status, code or f"http_{status}", detail or "no detail given")
        if status != 200 or not isinstance(value, dict):
            raise ServiceProtocolError(f"{path}: expected a JSON object with HTTP 200, got HTTP {status}")
        return value

    def fetch_nonce(self) -> bytes:
        """Ask the service for a fresh challenge nonce."""
        answer = self._post(CHALLENGE_PATH, json={"device_id": self._device_id})
        encoded = answer.get("nonce")
        if not isinstance(encoded, str) or len(encoded) > 2 * MAX_NONCE_BYTES:
            raise ServiceProtocolError("challenge answer has no nonce")
        try:
            nonce = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ServiceProtocolError("challenge nonce is not base64url") from exc
        if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
            raise ServiceProtocolError("challenge nonce has an invalid length")
        return nonce

    def attest(
        self,
        *,
        now: dt.datetime,
        installed_apps: Sequence[tuple[str, str]] = (),
        capability: bytes | None = None,
    ) -> DeviceCredential:
        """Run one attestation and return the checked credential.

        ``capability`` is the device capability file the OS runs under (development
        mode or field servicing); the EAT carries it so the service can verify it.

        Raises:
            AttestationRefusedError: the service refused (its code and detail are kept).
            ServiceProtocolError: an answer was malformed, oversized, or the
                certificate does not match our key or chain.
            ServiceUnreachableError: the service could not be reached or failed.
            MonitorFailedError: the monitor did not sign.
        """
        nonce = self.fetch_nonce()
        try:
            token = self._signer.sign_attestation(
                nonce=nonce,
                key_to_certify=self._public,
                installed_apps=installed_apps,
                iat=int(now.timestamp()),
                capability=capability,
            )
        except MonitorError as exc:
            raise MonitorFailedError(f"the monitor did not sign the attestation: {exc}") from exc
        _log.info("sending EAT (%d bytes) for device %s", len(token), self._device_id)
        answer = self._post(SUBMIT_PATH, content=token, headers={"Content-Type": EAT_CONTENT_TYPE})
        return self._check_answer(answer, now=now)

    def _check_answer(self, answer: dict[str, Any], *, now: dt.datetime) -> DeviceCredential:
        if answer.get("device_id") != self._device_id:
            raise ServiceProtocolError("the certificate answer is for another device")
        tenant_id, cert_pem, chain = answer.get("tenant_id"), answer.get("certificate"), answer.get("ca_chain")
        if not isinstance(tenant_id, str) or not isinstance(cert_pem, str):
            raise ServiceProtocolError("the certificate answer lacks tenant_id or certificate")
        if not isinstance(chain, list) or not 1 <= len(chain) <= self._policy.max_ca_chain:
            raise ServiceProtocolError("the certificate answer has no usable ca_chain")
        if not all(isinstance(item, str) for item in chain):
            raise ServiceProtocolError("ca_chain entries must be PEM strings")
        try:
            certificate = load_certificate_pem(cert_pem.encode())
            cas = [load_certificate_pem(item.encode()) for item in chain]
        except CryptoError as exc:
            raise ServiceProtocolError(f"the certificate answer does not parse: {exc}") from exc
        skew = dt.timedelta(seconds=self._policy.clock_skew_s)
        if certificate.not_valid_before_utc > now + skew or certificate.not_valid_after_utc <= now:
            raise ServiceProtocolError("the device certificate is not valid now (check the clocks)")
        try:
            # The service's clock may run a little ahead of ours: check the
            # chain at the later of our time and the certificate's start.
            verify_chain([certificate, *cas[:-1]], [cas[-1]], now=max(now, certificate.not_valid_before_utc))
        except CryptoError as exc:
            raise ServiceProtocolError(f"the device certificate does not check out: {exc}") from exc
        cert_key = certificate.public_key()
        if not isinstance(cert_key, ec.EllipticCurvePublicKey) or public_key_bytes(cert_key) != self._public:
            raise ServiceProtocolError("the device certificate is not for this device's TLS key")
        try:
            updates = parse_update_pointer(answer.get("updates"))
        except UpdateRefusedError as exc:
            raise ServiceProtocolError(f"the attestation answer's update pointer is malformed: {exc}") from exc
        return DeviceCredential(
            certificate=certificate,
            certificate_pem=cert_pem.encode(),
            ca_chain_pem=tuple(item.encode() for item in chain),
            tenant_id=tenant_id,
            updates=updates,
        )
