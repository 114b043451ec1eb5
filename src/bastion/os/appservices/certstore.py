"""CertStore: root CA and client certificates for an app's own TLS, kept per app.

=================================  ========================================  ==============================
op                                 args                                      result
=================================  ========================================  ==============================
``certstore.install_root_ca``      ``identifier``, ``cert_pem``              ``{}``
``certstore.install_client``       ``identifier``, ``cert_pem``, ``key_pem``  ``{}``
``certstore.list``                 none                                      ``certificates``: ``[{identifier,
                                                                             kind, subject, not_after}]``
``certstore.delete``               ``identifier``                            ``{}``
``certstore.available_space``      none                                      ``bytes``
=================================  ========================================  ==============================

All need ``"CertStore": true``. Certificates are validated with
``cryptography``: exactly one PEM certificate; a root CA must carry
BasicConstraints ``CA:TRUE``; a client certificate must not, and its private
key (unencrypted PKCS#8 or traditional PEM) must match its public key.
Installing under an existing identifier replaces it. Bounds: at most
:attr:`CertStoreLimits.max_certs` entries and
:attr:`CertStoreLimits.max_total_bytes` of PEM per app (Azure Sphere's
``CertStore_GetAvailableSpace``), :attr:`CertStoreLimits.max_pem_bytes` per PEM,
identifiers 1..16 of ``A-Z a-z 0-9 . _ -`` with no leading dot. A client key
never leaves the OS again (``list`` shows no key, and no error or log carries one).

Entries live in ``<root>/<component id>/<identifier>.json`` (0600, atomic), so
they survive reboots and app updates. The network broker verifies a server an
app connects to with :meth:`CertStoreService.roots` and presents
:meth:`CertStoreService.client_certificate`.

Example (OS side)::

    store = CertStoreService(state_dir.path / "certstore")
    ssl_context.load_verify_locations(cadata="".join(p.decode() for p in store.roots(component_id)))
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bastion.images.fileio import FileTooLargeError, atomic_write_bytes, read_bounded
from bastion.os.appservices.registry import (
    AppContext,
    Args,
    BadRequestError,
    NotFoundError,
    Operation,
    QuotaExceededError,
    Reply,
    UnavailableError,
    arg_str,
)

__all__ = ["CAPABILITY", "OPERATIONS", "CertStoreLimits", "CertStoreService", "StoredCertificate"]

CAPABILITY = "CertStore"
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SUFFIX = ".json"
_MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class CertStoreLimits:
    """Bounds of one app's certificate store.

    Attributes:
        max_certs: entries per app.
        max_pem_bytes: one certificate or key PEM.
        max_total_bytes: all PEM text of one app together.
    """

    max_certs: int = 20
    max_pem_bytes: int = 8 * 1024
    max_total_bytes: int = 24 * 1024


@dataclass(frozen=True)
class StoredCertificate:
    """One entry, as the OS reads it back."""

    identifier: str
    kind: str  # "root_ca" | "client"
    cert_pem: bytes
    key_pem: bytes | None

    @property
    def size(self) -> int:
        """PEM bytes it takes of the app's space."""
        return len(self.cert_pem) + len(self.key_pem or b"")

    def summary(self) -> dict[str, Any]:
        """What ``certstore.list`` shows (never the key)."""
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem)
            subject, not_after = cert.subject.rfc4514_string()[:200], int(cert.not_valid_after_utc.timestamp())
        except ValueError:
            subject, not_after = "", 0
        return {"identifier": self.identifier, "kind": self.kind, "subject": subject, "not_after": not_after}


def _one_certificate(pem: bytes) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise BadRequestError("not a PEM certificate") from None
    if len(certs) != 1:
        raise BadRequestError("exactly one PEM certificate is expected")
    return certs[0]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _public_bytes(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _check_client(cert_pem: bytes, key_pem: bytes) -> None:
    cert = _one_certificate(cert_pem)
    if _is_ca(cert):
        raise BadRequestError("a client certificate must not be a CA certificate")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise BadRequestError("the private key is not an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise BadRequestError("the private key must be EC, RSA or Ed25519")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < _MIN_RSA_BITS:
        raise BadRequestError(f"an RSA key must have at least {_MIN_RSA_BITS} bits")
    if _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
        raise BadRequestError("the private key does not match the certificate")


class CertStoreService:
    """Per-app certificate stores under one directory.

    Args:
        root: the directory (``DEV/os-state/certstore``); created 0700.
        limits: the bounds.
    """

    def __init__(self, root: Path, limits: CertStoreLimits | None = None) -> None:
        self.root = root
        self.limits = limits or CertStoreLimits()
        self._lock = threading.Lock()

    def _dir(self, component_id: str) -> Path:
        if not _UUID.fullmatch(component_id):
            raise BadRequestError("not a component ID")
        return self.root / component_id

    def _check_identifier(self, identifier: str) -> str:
        if not _IDENTIFIER.fullmatch(identifier) or ".." in identifier:
            raise BadRequestError("an identifier is 1..16 of A-Z a-z 0-9 . _ - with no leading dot")
        return identifier

    def _read(self, path: Path) -> StoredCertificate | None:
        try:
            value = json.loads(read_bounded(path, 3 * self.limits.max_pem_bytes + 1024))
            key = value.get("key_pem")
            return StoredCertificate(
                path.name[: -len(_SUFFIX)],
                str(value["kind"]),
                str(value["cert_pem"]).encode("ascii"),
                key.encode("ascii") if isinstance(key, str) else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, FileTooLargeError):
            return None  # unreadable entries are skipped, never trusted

    def entries(self, component_id: str) -> list[StoredCertificate]:
        """The app's entries, by identifier."""
        directory = self._dir(component_id)
        if not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.glob(f"*{_SUFFIX}"))[: self.limits.max_certs]:
            if path.is_file() and not path.is_symlink() and _IDENTIFIER.fullmatch(path.name[: -len(_SUFFIX)]):
                entry = self._read(path)
                if entry is not None:
                    found.append(entry)
        return found

    def _install(self, component_id: str, entry: StoredCertificate) -> None:
        for pem in (entry.cert_pem, entry.key_pem or b""):
            if len(pem) > self.limits.max_pem_bytes:
                raise BadRequestError(f"a PEM is at most {self.limits.max_pem_bytes} bytes")
        with self._lock:
            others = [e for e in self.entries(component_id) if e.identifier != entry.identifier]
            if len(others) >= self.limits.max_certs:
                raise QuotaExceededError(f"the app's CertStore holds {len(others)} certificates, the most it may")
            used = sum(e.size for e in others) + entry.size
            if used > self.limits.max_total_bytes:
                raise QuotaExceededError(
                    f"the app's CertStore would hold {used} bytes; {self.limits.max_total_bytes} is the most"
                )
            directory = self._dir(component_id)
            value: dict[str, str] = {"kind": entry.kind, "cert_pem": entry.cert_pem.decode("ascii")}
            if entry.key_pem is not None:
                value["key_pem"] = entry.key_pem.decode("ascii")
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                atomic_write_bytes(directory / f"{entry.identifier}{_SUFFIX}", json.dumps(value).encode(), mode=0o600)
            except OSError:
                raise UnavailableError("the certificate store cannot be written") from None

    def install_root_ca(self, component_id: str, identifier: str, cert_pem: bytes) -> None:
        """Install (or replace) a root CA certificate.

        Raises:
            BadRequestError: not one CA certificate, or a bad identifier.
            QuotaExceededError: the count or space bound would be passed.
        """
        self._check_identifier(identifier)
        if not _is_ca(_one_certificate(cert_pem)):
            raise BadRequestError("a root CA certificate must carry BasicConstraints CA:TRUE")
        self._install(component_id, StoredCertificate(identifier, "root_ca", cert_pem, None))

    def install_client(self, component_id: str, identifier: str, cert_pem: bytes, key_pem: bytes) -> None:
        """Install (or replace) a client certificate and its private key.

        Raises:
            BadRequestError: the certificate or key is malformed, or they do not match.
            QuotaExceededError: the count or space bound would be passed.
        """
        self._check_identifier(identifier)
        _check_client(cert_pem, key_pem)
        self._install(component_id, StoredCertificate(identifier, "client", cert_pem, key_pem))

    def delete(self, component_id: str, identifier: str) -> None:
        """Remove an entry.

        Raises:
            NotFoundError: no such identifier.
        """
        self._check_identifier(identifier)
        with self._lock:
            try:
                (self._dir(component_id) / f"{identifier}{_SUFFIX}").unlink()
            except FileNotFoundError:
                raise NotFoundError(f"no certificate {identifier}") from None
            except OSError:
                raise UnavailableError("the certificate store cannot be written") from None

    def available_space(self, component_id: str) -> int:
        """PEM bytes the app may still store."""
        return max(self.limits.max_total_bytes - sum(e.size for e in self.entries(component_id)), 0)

    def roots(self, component_id: str) -> list[bytes]:
        """The app's root CA certificates (PEM), to verify a server it connects to."""
        return [e.cert_pem for e in self.entries(component_id) if e.kind == "root_ca"]

    def client_certificate(self, component_id: str, identifier: str) -> tuple[bytes, bytes] | None:
        """The app's client certificate and key under ``identifier`` (PEM), if any."""
        with contextlib.suppress(BadRequestError):
            for entry in self.entries(component_id):
                if entry.identifier == identifier and entry.kind == "client" and entry.key_pem is not None:
                    return entry.cert_pem, entry.key_pem
        return None


def _pem(args: Args, name: str, service: CertStoreService) -> bytes:
    text = arg_str(args, name, max_chars=service.limits.max_pem_bytes)
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequestError(f"argument {name!r} must be PEM text") from None


def _identifier(args: Args) -> str:
    return arg_str(args, "identifier", max_chars=16)


def _install_root(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(CertStoreService)
    service.install_root_ca(ctx.component_id, _identifier(args), _pem(args, "cert_pem", service))
    return Reply({})


def _install_client(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(CertStoreService)
    service.install_client(
        ctx.component_id, _identifier(args), _pem(args, "cert_pem", service), _pem(args, "key_pem", service)
    )
    return Reply({})


def _list(ctx: AppContext, args: Args) -> Reply:
    del args
    entries = ctx.service(CertStoreService).entries(ctx.component_id)
    return Reply({"certificates": [e.summary() for e in entries]})


def _delete(ctx: AppContext, args: Args) -> Reply:
    ctx.service(CertStoreService).delete(ctx.component_id, _identifier(args))
    return Reply({})


def _space(ctx: AppContext, args: Args) -> Reply:
    del args
    return Reply({"bytes": ctx.service(CertStoreService).available_space(ctx.component_id)})


OPERATIONS = (
    Operation("certstore.install_root_ca", _install_root, capability=CAPABILITY),
    Operation("certstore.install_client", _install_client, capability=CAPABILITY),
    Operation("certstore.list", _list, capability=CAPABILITY),
    Operation("certstore.delete", _delete, capability=CAPABILITY),
    Operation("certstore.available_space", _space, capability=CAPABILITY),
)
