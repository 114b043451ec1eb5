"""net.tls_connect: the OS runs mutual TLS with the device credential; the app gets plaintext.

The server is a loopback TLS server that requires a client certificate from
the tenant CA (the way a tenant's broker trusts its devices). The device
credential is laid out in an OS state directory as attestation leaves it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _net_world import CID, OTHER_TENANT, TENANT, recv_exactly, serve_app

from _tls_pki import LOOPBACK, Ca, TlsServer, device_state, new_ca, server_credentials
from bastion.applibs import _wire, certstore, networking
from bastion.applibs.errors import InvalidArgumentError, PermissionDeniedError, QuotaExceededError, RequestError
from bastion.os.appservices.certstore import CertStoreService
from bastion.os.credentials import DeviceCredentialsService
from bastion.os.netbroker.broker import NetworkSettings
from bastion.os.state import StateDir

DEVICE_ID = "ab" * 32


@dataclass
class World:
    tenant_ca: Ca
    broker_ca: Ca
    state: StateDir
    server: TlsServer

    @property
    def credentials(self) -> DeviceCredentialsService:
        return DeviceCredentialsService(self.state)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    tenant_ca, broker_ca = new_ca("tenant CA"), new_ca("broker CA")
    state = device_state(tmp_path / "os-state", tenant_ca, tenant_id=TENANT, device_id=DEVICE_ID)
    cert, key = server_credentials(tmp_path, broker_ca)
    server = TlsServer(cert, key, tenant_ca)
    yield World(tenant_ca, broker_ca, state, server)
    server.close()


def _caps(**extra: object) -> dict[str, object]:
    return {"AllowedConnections": ["localhost"], "DeviceAuthentication": TENANT, **extra}


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_mutual_tls_through_the_os(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    with serve_app(tmp_path, _caps(), monkeypatch=monkeypatch, credentials=world.credentials) as app:
        with networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem) as tls:
            assert tls.family == socket.AF_UNIX  # the plaintext end; TLS runs in the OS
            assert tls.getblocking()
            assert recv_exactly(tls, len(f"hello {DEVICE_ID}\n")) == f"hello {DEVICE_ID}\n".encode()
            tls.sendall(b"telemetry")
            assert recv_exactly(tls, 9) == b"telemetry"
        assert world.server.clients == [DEVICE_ID]  # the server saw the device certificate
        assert app.records == []
        assert _wait_until(lambda: app.net.tunnels.active(CID) == 0)


def test_large_transfers_pass_the_bounded_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World):
    settings = NetworkSettings(bind_address=LOOPBACK, tunnel_buffer_bytes=4096)
    with (
        serve_app(tmp_path, _caps(), monkeypatch=monkeypatch, credentials=world.credentials, settings=settings),
        networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem) as tls,
    ):
        recv_exactly(tls, len(f"hello {DEVICE_ID}\n"))
        payload = os.urandom(1 << 20)
        received = bytearray()
        # Send in pieces and read as we go: a tunnel holds at most 4 KiB per direction.
        for offset in range(0, len(payload), 65536):
            tls.sendall(payload[offset : offset + 65536])
            while len(received) < offset + 32768:
                received += tls.recv(65536)
        while len(received) < len(payload):
            received += tls.recv(65536)
        assert bytes(received) == payload


def test_the_app_receives_no_key_material(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    key_pem = world.state.key_path.read_bytes()
    with serve_app(tmp_path, _caps(), monkeypatch=monkeypatch, credentials=world.credentials) as app:
        # Speak the wire directly, to see every byte and fd the app is given.
        request = {
            "id": 1,
            "op": "net.tls_connect",
            "args": {
                "host": "localhost",
                "port": world.server.port,
                "ca_pem_b64": base64.b64encode(world.broker_ca.pem).decode(),
            },
        }
        sock = app.client._sock
        _wire.send_message(sock, request)
        message = _wire.recv_message(sock)
        assert message is not None
        reply, fds = message
        assert reply["ok"] is True, reply
        assert len(fds) == 1
        assert stat.S_ISSOCK(os.fstat(fds[0]).st_mode)  # a socket, not a file of the OS
        with socket.socket(fileno=fds[0]) as tls:
            tls.setblocking(True)
            tls.sendall(b"bye")
            received = recv_exactly(tls, len(f"hello {DEVICE_ID}\n") + 3)
        wire = json.dumps(reply).encode() + received
        assert b"PRIVATE KEY" not in wire
        assert b"-----BEGIN" not in wire
        assert key_pem not in wire
        assert reply["result"]["device_id"] == DEVICE_ID
        assert reply["result"]["tls_version"].startswith("TLSv1.")
        assert reply["result"]["server_subject"] == "localhost"
        assert app.records == []


def test_without_device_authentication_it_is_denied(tmp_path: Path, monkeypatch, world: World) -> None:
    caps = {"AllowedConnections": ["localhost"]}
    with serve_app(tmp_path, caps, monkeypatch=monkeypatch, credentials=world.credentials) as app:
        with pytest.raises(PermissionDeniedError) as info:
            networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        assert info.value.capability == "DeviceAuthentication"
        assert app.denials() == [
            "DeviceAuthentication: net.tls_connect: the app manifest does not grant DeviceAuthentication"
        ]
    assert world.server.clients == []


def test_a_tenant_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    caps = _caps(DeviceAuthentication=OTHER_TENANT)
    with serve_app(tmp_path, caps, monkeypatch=monkeypatch, credentials=world.credentials) as app:
        with pytest.raises(PermissionDeniedError, match=OTHER_TENANT) as info:
            networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        assert info.value.capability == "DeviceAuthentication"
        assert len(app.denials()) == 1
        assert app.denials()[0].startswith("DeviceAuthentication: net.tls_connect:")
    assert world.server.clients == []


def test_the_host_must_be_allowed_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    caps = {"AllowedConnections": ["broker.example.com"], "DeviceAuthentication": TENANT}
    with serve_app(tmp_path, caps, monkeypatch=monkeypatch, credentials=world.credentials) as app:
        with pytest.raises(PermissionDeniedError, match="localhost") as info:
            networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        assert info.value.capability == "AllowedConnections"
        assert app.denials()[0].startswith("AllowedConnections: net.tls_connect:")


def test_the_server_is_verified_against_the_apps_ca(tmp_path: Path, monkeypatch, world: World) -> None:
    stranger = new_ca("someone else")
    caps = _caps(AllowedConnections=["localhost", LOOPBACK])
    with serve_app(tmp_path, caps, monkeypatch=monkeypatch, credentials=world.credentials):
        with pytest.raises(RequestError, match="server certificate does not verify") as info:
            networking.tls_connect("localhost", world.server.port, ca_pem=stranger.pem)
        assert info.value.code == "unavailable"
        with pytest.raises(InvalidArgumentError, match="CA PEM"):
            networking.tls_connect("localhost", world.server.port, ca_pem=b"not a pem")
        # The IP SAN verifies a connection by address.
        with networking.tls_connect(LOOPBACK, world.server.port, ca_pem=world.broker_ca.pem) as tls:
            assert recv_exactly(tls, 6) == b"hello "


def test_a_device_of_another_tenant_is_refused_by_the_server(tmp_path: Path, monkeypatch, world: World) -> None:
    other_ca = new_ca("other tenant CA")
    other = DeviceCredentialsService(device_state(tmp_path / "other-state", other_ca, tenant_id=OTHER_TENANT))
    caps = _caps(DeviceAuthentication=OTHER_TENANT)
    with serve_app(tmp_path, caps, monkeypatch=monkeypatch, credentials=other):
        refused: RequestError | None = None
        try:
            tls = networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        except RequestError as exc:  # TLS 1.2: the server's alert ends the handshake
            refused = exc
        else:  # TLS 1.3: the client finishes first; the server's alert closes the tunnel
            with tls:
                tls.settimeout(5)
                assert tls.recv(100) == b""
        assert refused is None or refused.code == "unavailable"
    assert world.server.clients == []
    assert _wait_until(lambda: bool(world.server.errors))


def test_no_certificate_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    empty = DeviceCredentialsService(StateDir(tmp_path / "fresh"))
    with serve_app(tmp_path, _caps(), monkeypatch=monkeypatch, credentials=empty) as app:
        with pytest.raises(RequestError, match="has not attested") as info:
            networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        assert info.value.code == "unavailable"
        assert app.denials() == []


def test_tunnels_per_app_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    settings = NetworkSettings(bind_address=LOOPBACK, max_tunnels_per_app=1)
    with serve_app(tmp_path, _caps(), monkeypatch=monkeypatch, credentials=world.credentials, settings=settings) as app:
        first = networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        with pytest.raises(QuotaExceededError, match="TLS connections open"):
            networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        first.close()
        assert _wait_until(lambda: app.net.tunnels.active(CID) == 0)
        with networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem) as again:
            assert recv_exactly(again, 6) == b"hello "


def test_stopping_the_os_closes_the_tunnels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    with serve_app(tmp_path, _caps(), monkeypatch=monkeypatch, credentials=world.credentials) as app:
        tls = networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)
        with tls:
            recv_exactly(tls, len(f"hello {DEVICE_ID}\n"))
            app.net.close()
            tls.settimeout(5)
            assert tls.recv(10) == b""  # the OS end is closed
            assert app.net.tunnels.active(CID) == 0
            with pytest.raises(RequestError, match="stopping"):
                networking.tls_connect("localhost", world.server.port, ca_pem=world.broker_ca.pem)


def test_server_roots_from_the_apps_cert_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    store = CertStoreService(tmp_path / "certstore")
    caps = _caps(CertStore=True)
    with serve_app(
        tmp_path, caps, monkeypatch=monkeypatch, credentials=world.credentials, extra_services=(store,)
    ) as app:
        with pytest.raises(InvalidArgumentError, match="CertStore holds no root CA"):
            networking.tls_connect("localhost", world.server.port)
        certstore.install_root_ca_certificate("broker", world.broker_ca.pem.decode())
        with networking.tls_connect("localhost", world.server.port) as tls:  # no ca_pem: the stored root
            assert recv_exactly(tls, 6) == b"hello "
        # The request's own CA still wins over the store.
        with pytest.raises(RequestError, match="does not verify"):
            networking.tls_connect("localhost", world.server.port, ca_pem=new_ca("other").pem)
        assert app.denials() == []


def test_without_a_ca_or_cert_store_it_says_what_is_missing(tmp_path: Path, monkeypatch, world: World) -> None:
    with (
        serve_app(tmp_path, _caps(), monkeypatch=monkeypatch, credentials=world.credentials),
        pytest.raises(InvalidArgumentError, match="ca_pem_b64, or CertStore"),
    ):
        networking.tls_connect("localhost", world.server.port)
