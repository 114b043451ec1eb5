"""The device's TLS credential (certificate and key) for the TLS the OS does on apps' behalf.

The device key lives in the OS state directory (``device-key.pem``, 0600) and
the certificate the service issued at the last attestation beside it
(:mod:`bastion.os.state`). :class:`DeviceCredentialsService` is the only
reader of the key outside attestation: it loads it into an OpenSSL context that
stays in the OS process (:meth:`DeviceCredentialsService.load_into`), so the
key never crosses the applibs socket (``DeviceAuthentication``,
docs/adr/0007-connection-broker.md).

Example::

    creds = DeviceCredentialsService(StateDir(dev / "os-state"))
    current = creds.current()          # tenant, device, validity; raises CredentialsError
    creds.load_into(ssl_context)       # client certificate and key for mutual TLS
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from bastion.crypto.certs import load_certificate_pem
from bastion.crypto.errors import CryptoError
from bastion.os.errors import CredentialsError, StateError
from bastion.os.state import StateDir

__all__ = ["DeviceCredentials", "DeviceCredentialsService", "tenant_of_certificate"]

#: The URI SAN prefix of a device certificate (``bastion.crypto.certs.device_cert_uri``).
_URI_PREFIX = "urn:bastion:tenant:"
_URI_DEVICE = ":device:"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def tenant_of_certificate(cert: x509.Certificate) -> tuple[str, str]:
    """``(tenant id, device id)`` from a device certificate's URI SAN.

    Raises:
        CredentialsError: the certificate carries no Bastion device URI.
    """
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CredentialsError("the device certificate has no subject alternative name") from exc
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(_URI_PREFIX) and _URI_DEVICE in uri:
            tenant, _, device = uri[len(_URI_PREFIX) :].partition(_URI_DEVICE)
            if tenant and device:
                return tenant, device
    raise CredentialsError("the device certificate names no tenant")


@dataclass(frozen=True)
class DeviceCredentials:
    """What the OS may say about its current credential (nothing secret).

    Attributes:
        tenant_id: the tenant the device attested to (from the certificate).
        device_id: the device ID (from the certificate).
        not_after: end of the certificate's validity.
        subject: the certificate's subject common name.
    """

    tenant_id: str
    device_id: str
    not_after: dt.datetime
    subject: str


class DeviceCredentialsService:
    """Loads the device certificate and key from the OS state directory.

    Args:
        state_dir: the OS state directory.
        clock: the current time (UTC); certificates are checked against it.
    """

    def __init__(self, state_dir: StateDir, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._state = state_dir
        self._clock = clock

    def _certificate(self) -> x509.Certificate:
        try:
            pem = self._state.load_cert_pem()
        except StateError as exc:
            raise CredentialsError("the device certificate cannot be read") from exc
        if pem is None:
            raise CredentialsError("the device has no certificate yet (it has not attested)")
        try:
            return load_certificate_pem(pem)
        except CryptoError as exc:
            raise CredentialsError("the stored device certificate does not parse") from exc

    def current(self) -> DeviceCredentials:
        """The credential in force now.

        Raises:
            CredentialsError: no certificate, not valid now, or not a device certificate.
        """
        cert = self._certificate()
        now = self._clock()
        if now < cert.not_valid_before_utc:
            raise CredentialsError("the device certificate is not valid yet (check the clock)")
        if now >= cert.not_valid_after_utc:
            expired = cert.not_valid_after_utc.isoformat()
            raise CredentialsError(f"the device certificate expired at {expired}; the device must attest again")
        tenant, device = tenant_of_certificate(cert)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject = str(names[0].value) if names else ""
        return DeviceCredentials(
            tenant_id=tenant, device_id=device, not_after=cert.not_valid_after_utc, subject=subject
        )

    def load_into(self, context: ssl.SSLContext) -> DeviceCredentials:
        """Load the device certificate and key into ``context`` (the key stays in this process).

        Raises:
            CredentialsError: no valid credential, or the key and certificate do not load or match.
        """
        current = self.current()
        key_path, cert_path = self._state.key_path, self._state.cert_path
        try:
            mode = key_path.stat().st_mode
        except OSError as exc:
            raise CredentialsError("the device key cannot be read") from exc
        if mode & 0o077:
            raise CredentialsError("the device key is accessible by other users; expected mode 0600")
        try:
            context.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
        except (OSError, ssl.SSLError) as exc:
            # The message names no path or key material, only what went wrong.
            raise CredentialsError("the device certificate and key do not load as a pair") from exc
        return current
