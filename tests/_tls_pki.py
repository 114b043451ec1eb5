"""A small test PKI and a TLS server for the connection-broker tests (unit and e2e).

* :func:`new_ca` makes a CA (as a tenant CA or a broker's own CA);
* :func:`device_state` lays out a device credential in an OS state directory
  as attestation leaves it (key 0600, certificate from the tenant CA);
* :func:`server_credentials` issues a server certificate for ``localhost``
  and ``127.0.0.1`` (trustme-style, with ``cryptography``);
* :class:`TlsServer` is a loopback TLS server that requires a client
  certificate from a given CA and echoes, prefixed with the client's CN.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.crypto.certs import certificate_pem, issue_device_cert, make_ca
from bastion.crypto.keys import PrivateKey, generate_private_key, private_key_pem
from bastion.os.state import StateDir

LOOPBACK = "127.0.0.1"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Ca:
    key: PrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return certificate_pem(self.cert)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path


def new_ca(name: str) -> Ca:
    key = generate_private_key()
    return Ca(key, make_ca(name, key, now=_now()))


def device_state(path: Path, tenant_ca: Ca, *, tenant_id: str, device_id: str = "d" * 64) -> StateDir:
    """An OS state directory holding a device key and a certificate from ``tenant_ca``."""
    state = StateDir(path)
    key = state.load_or_create_key()
    cert = issue_device_cert(
        tenant_ca.key, tenant_ca.cert, key.public_key(), tenant_id=tenant_id, device_id=device_id, now=_now()
    )
    state.save_credentials(certificate_pem(cert), tenant_ca.pem)
    return state


def server_credentials(directory: Path, ca: Ca, *, name: str = "localhost") -> tuple[Path, Path]:
    """A server certificate for ``name`` and 127.0.0.1 from ``ca``: ``(cert file, key file)``."""
    key = generate_private_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.IPv4Address(LOOPBACK))],
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate_pem(cert))
    key_path.write_bytes(private_key_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path


class TlsServer:
    """A loopback TLS server requiring a client certificate from ``client_ca``.

    Each connection gets ``hello <client CN>\\n`` and then its own bytes echoed.
    Handshake failures are kept in :attr:`errors`; client CNs in :attr:`clients`.
    """

    def __init__(self, cert: Path, key: Path, client_ca: Ca) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cadata=client_ca.pem.decode())
        self.sock = socket.create_server((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])
        self.clients: list[str] = []
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(str(exc))
            conn.close()
            return
        with tls:
            peer = tls.getpeercert() or {}
            cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), "")
            self.clients.append(str(cn))
            try:
                tls.sendall(f"hello {cn}\n".encode())
                while data := tls.recv(65536):
                    tls.sendall(data)
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(str(exc))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.sock.close()
        self._accept.join(2)
        for thread in self._threads:
            thread.join(5)
