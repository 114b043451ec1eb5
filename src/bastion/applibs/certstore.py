"""CertStore: root CA and client certificates for the app's own TLS (``"CertStore": true``).

Azure Sphere's ``CertStore_InstallRootCACertificate``,
``CertStore_InstallClientCertificate``, ``CertStore_GetCertificateCount``,
``CertStore_DeleteCertificate`` and ``CertStore_GetAvailableSpace``. The OS
validates every certificate, keeps them per app across reboots and updates, and
uses them when it makes a TLS connection for the app. A client key, once
installed, is never handed back.

Identifiers are 1..16 of ``A-Z a-z 0-9 . _ -`` (no leading dot); installing under
an identifier that exists replaces it. The store is bounded in count and bytes
(:func:`get_available_space`).

Example::

    from bastion.applibs import certstore
    certstore.install_root_ca_certificate("broker-ca", open("/app/ca.pem").read())
    print([c.identifier for c in certstore.list_certificates()])
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bastion.applibs._client import connection

__all__ = [
    "CertificateInfo",
    "delete_certificate",
    "get_available_space",
    "install_client_certificate",
    "install_root_ca_certificate",
    "list_certificates",
]


@dataclass(frozen=True)
class CertificateInfo:
    """One stored certificate (``kind`` is ``root_ca`` or ``client``)."""

    identifier: str
    kind: str
    subject: str
    not_after: dt.datetime


def install_root_ca_certificate(identifier: str, cert_pem: str) -> None:
    """Install a root CA certificate (one PEM certificate with BasicConstraints CA:TRUE)."""
    connection().call("certstore.install_root_ca", {"identifier": identifier, "cert_pem": cert_pem})


def install_client_certificate(identifier: str, cert_pem: str, key_pem: str) -> None:
    """Install a client certificate and its unencrypted PEM private key (they must match)."""
    connection().call("certstore.install_client", {"identifier": identifier, "cert_pem": cert_pem, "key_pem": key_pem})


def list_certificates() -> list[CertificateInfo]:
    """The stored certificates, by identifier."""
    return [
        CertificateInfo(
            str(c["identifier"]),
            str(c["kind"]),
            str(c["subject"]),
            dt.datetime.fromtimestamp(int(c["not_after"]), dt.UTC),
        )
        for c in connection().call("certstore.list")["certificates"]
    ]


def delete_certificate(identifier: str) -> None:
    """Remove a stored certificate."""
    connection().call("certstore.delete", {"identifier": identifier})


def get_available_space() -> int:
    """PEM bytes the store can still take."""
    return int(connection().call("certstore.available_space")["bytes"])
