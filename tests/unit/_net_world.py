"""Test world for the connection broker: an app served in-process, loopback servers, a test PKI.

* :func:`serve_app` starts an :class:`AppServer` for a manifest with the given
  capabilities and points applibs' process connection at its other end, so
  ``bastion.applibs.networking`` runs exactly as inside a sandbox.
* :class:`Pki` makes a tenant CA, a device credential in an OS state directory
  (key 0600, certificate from the tenant CA, as attestation leaves them) and a
  server certificate for ``localhost`` / ``127.0.0.1`` from a broker CA.
* :class:`TlsServer` is a loopback TLS server that requires a client
  certificate from a given CA and echoes, prefixed with the client's CN.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.applibs import _client
from bastion.applibs._client import Connection
from bastion.crypto.certs import certificate_pem, issue_device_cert, make_ca
from bastion.crypto.keys import PrivateKey, generate_private_key, private_key_pem
from bastion.images.manifest import validate_manifest
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.server import AppServer
from bastion.os.credentials import DeviceCredentialsService
from bastion.os.netbroker.broker import NetworkService, NetworkSettings, Resolver
from bastion.os.state import StateDir

CID = "3f6b1c2d-8e4a-4b7f-9c01-5d2e7a9b0c13"
TENANT = "7d0c3a52-1e9b-4f6a-8c2d-0b9e4f1a2c3d"
OTHER_TENANT = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
LOOPBACK = "127.0.0.1"


def manifest_bytes(capabilities: dict[str, object], *, cid: str = CID) -> bytes:
    return json.dumps(
        {
            "SchemaVersion": 1,
            "Name": "net-test",
            "ComponentId": cid,
            "EntryPoint": "main.py",
            "CmdArgs": [],
            "ApplicationType": "Default",
            "Capabilities": capabilities,
        }
    ).encode()


@dataclass
class ServedApp:
    """One app's OS side (server, services, recorded events) and its client end."""

    server: AppServer
    client: Connection
    net: NetworkService
    records: list[tuple[str, str]] = field(default_factory=list)

    def denials(self) -> list[str]:
        return [detail for kind, detail in self.records if kind == "app_denied"]


@contextlib.contextmanager
def serve_app(
    tmp_path: Path,
    capabilities: dict[str, object],
    *,
    monkeypatch: pytest.MonkeyPatch,
    settings: NetworkSettings | None = None,
    resolver: Resolver | None = None,
    credentials: DeviceCredentialsService | None = None,
) -> Iterator[ServedApp]:
    """Serve an app with ``capabilities``; applibs' process connection is its client end."""
    records: list[tuple[str, str]] = []
    net = NetworkService(settings or NetworkSettings(bind_address=LOOPBACK), resolver=resolver)
    services: dict[type, object] = {NetworkService: net}
    if credentials is not None:
        services[DeviceCredentialsService] = credentials
    ctx = AppContext(
        component_id=CID,
        version="1.0.0",
        manifest=validate_manifest(manifest_bytes(capabilities)),
        storage_dir=tmp_path,
        services=services,
        record=lambda kind, detail: records.append((kind, detail)),
    )
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = AppServer(ctx, os_end)
    server.start()
    client = Connection(app_end)
    monkeypatch.setattr(_client, "_connection", client)
    try:
        yield ServedApp(server, client, net, records)
    finally:
        client.close()
        server.close()
        net.close()


# -- loopback servers -------------------------------------------------------------


class EchoServer:
    """A TCP echo server on 127.0.0.1 (one thread per connection)."""

    def __init__(self) -> None:
        self.sock = socket.create_server((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.sock.close()
        self._accept.join(2)
        for thread in self._threads:
            thread.join(2)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


# -- a test PKI ---------------------------------------------------------------------


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
