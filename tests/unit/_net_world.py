"""Test world for the connection broker: an app served in-process, loopback servers.

* :func:`serve_app` starts an :class:`AppServer` for a manifest with the given
  capabilities and points applibs' process connection at its other end, so
  ``bastion.applibs.networking`` runs exactly as inside a sandbox.
* :class:`EchoServer` is a loopback TCP echo server.

The test PKI and the TLS server are in ``tests/_tls_pki.py`` (shared with e2e).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _tls_pki import LOOPBACK
from bastion.applibs import _client
from bastion.applibs._client import Connection
from bastion.images.manifest import validate_manifest
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.server import AppServer
from bastion.os.credentials import DeviceCredentialsService
from bastion.os.netbroker.broker import NetworkService, NetworkSettings, Resolver

CID = "3f6b1c2d-8e4a-4b7f-9c01-5d2e7a9b0c13"
TENANT = "7d0c3a52-1e9b-4f6a-8c2d-0b9e4f1a2c3d"
OTHER_TENANT = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"


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
    extra_services: tuple[object, ...] = (),
) -> Iterator[ServedApp]:
    """Serve an app with ``capabilities``; applibs' process connection is its client end."""
    records: list[tuple[str, str]] = []
    net = NetworkService(settings or NetworkSettings(bind_address=LOOPBACK), resolver=resolver)
    services: dict[type, object] = {NetworkService: net}
    if credentials is not None:
        services[DeviceCredentialsService] = credentials
    for service in extra_services:
        services[type(service)] = service
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
