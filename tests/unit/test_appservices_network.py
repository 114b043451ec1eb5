"""The net.* applibs ops through the real choke point, with real sockets on loopback.

Each op is tried granted and denied; a denial names its capability and is
recorded as ``app_denied``. The app side is ``bastion.applibs.networking``,
talking to an :class:`AppServer` over a SEQPACKET socketpair exactly as it does
from inside a sandbox.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from _net_world import LOOPBACK, EchoServer, recv_exactly, serve_app

from bastion.applibs import networking
from bastion.applibs.errors import InvalidArgumentError, PermissionDeniedError, RequestError
from bastion.cli._localstack import free_port
from bastion.os.netbroker.broker import NetworkSettings


@pytest.fixture
def echo() -> EchoServer:
    server = EchoServer()
    yield server
    server.close()


def _fake_resolver(names: dict[str, str]):
    def resolve(host: str, port: int, socktype: int) -> list[tuple[str, int]]:
        del socktype
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(names[host], port)]

    return resolve


def test_connect_granted_gives_a_working_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, echo: EchoServer):
    with serve_app(tmp_path, {"AllowedConnections": ["localhost"]}, monkeypatch=monkeypatch) as app:
        with networking.connect("LocalHost", echo.port) as sock:  # the real resolver, case-insensitive
            assert sock.type == socket.SOCK_STREAM
            assert sock.family == socket.AF_INET
            assert sock.getblocking()
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
        assert app.records == []


def test_connect_denied_names_the_capability_and_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, echo):
    with serve_app(tmp_path, {"AllowedConnections": ["example.com"]}, monkeypatch=monkeypatch) as app:
        with pytest.raises(PermissionDeniedError, match="localhost") as info:
            networking.connect("localhost", echo.port)
        assert info.value.capability == "AllowedConnections"
        assert app.denials() == [
            "AllowedConnections: net.connect: the app manifest does not allow connections to localhost "
            "(AllowedConnections)"
        ]


def test_no_allowed_connections_at_all_is_refused_at_the_choke_point(tmp_path: Path, monkeypatch, echo) -> None:
    with serve_app(tmp_path, {}, monkeypatch=monkeypatch) as app:
        for call in (
            lambda: networking.connect(LOOPBACK, echo.port),
            lambda: networking.udp_connect(LOOPBACK, echo.port),
        ):
            with pytest.raises(PermissionDeniedError) as info:
                call()
            assert info.value.capability == "AllowedConnections"
        assert len(app.denials()) == 2
        assert all(d.startswith("AllowedConnections: net.") for d in app.denials())


def test_wildcards_and_raw_addresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, echo: EchoServer) -> None:
    resolver = _fake_resolver({"api.contoso.com": LOOPBACK, "a.b.contoso.com": LOOPBACK, "contoso.com": LOOPBACK})
    with serve_app(
        tmp_path, {"AllowedConnections": ["*.contoso.com"]}, monkeypatch=monkeypatch, resolver=resolver
    ) as app:
        for host in ("api.contoso.com", "A.B.Contoso.com"):
            with networking.connect(host, echo.port) as sock:
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
        # The domain itself is not below the wildcard.
        with pytest.raises(PermissionDeniedError, match=r"contoso\.com"):
            networking.connect("contoso.com", echo.port)
        # A raw address is refused although the listed names resolve to it: the
        # OS checks the name asked for, not where it leads.
        with pytest.raises(PermissionDeniedError, match=r"127\.0\.0\.1"):
            networking.connect(LOOPBACK, echo.port)
        assert len(app.denials()) == 2


def test_a_listed_address_is_connected_without_resolution(tmp_path: Path, monkeypatch, echo: EchoServer) -> None:
    def no_dns(host: str, port: int, socktype: int) -> list[tuple[str, int]]:
        raise AssertionError(f"an address was looked up: {host}")

    with (
        serve_app(tmp_path, {"AllowedConnections": [LOOPBACK]}, monkeypatch=monkeypatch, resolver=no_dns),
        networking.connect(LOOPBACK, echo.port) as sock,
    ):
        assert sock.getpeername() == (LOOPBACK, echo.port)


@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "*.contoso.com", "::1", "a" * 300])
def test_malformed_hosts_are_bad_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    with serve_app(tmp_path, {"AllowedConnections": ["*.contoso.com"]}, monkeypatch=monkeypatch) as app:
        with pytest.raises(InvalidArgumentError):
            networking.connect(host, 80)
        assert app.denials() == []


def test_unresolvable_and_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = _fake_resolver({"closed.test": LOOPBACK})
    caps = {"AllowedConnections": ["missing.test", "closed.test"]}
    with serve_app(tmp_path, caps, monkeypatch=monkeypatch, resolver=resolver):
        with pytest.raises(RequestError, match="does not resolve") as info:
            networking.connect("missing.test", 80)
        assert info.value.code == "unavailable"
        with pytest.raises(RequestError, match=r"cannot connect to closed\.test") as info:
            networking.connect("closed.test", free_port())
        assert info.value.code == "unavailable"


def test_resolution_is_bounded_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def stuck(host: str, port: int, socktype: int) -> list[tuple[str, int]]:
        release.wait(10)
        return [(LOOPBACK, port)]

    settings = NetworkSettings(bind_address=LOOPBACK, resolve_timeout_s=0.2, max_resolutions=1)
    caps = {"AllowedConnections": ["slow.test"]}
    with serve_app(tmp_path, caps, monkeypatch=monkeypatch, settings=settings, resolver=stuck):
        with pytest.raises(RequestError, match=r"did not resolve within 0\.2 s"):
            networking.connect("slow.test", 80)
        # The stuck lookup still holds the only slot: the next one is refused at once.
        with pytest.raises(RequestError, match="too many name resolutions"):
            networking.connect("slow.test", 80)
        release.set()


def test_udp_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((LOOPBACK, 0))
        server.settimeout(5)
        port = server.getsockname()[1]
        with serve_app(tmp_path, {"AllowedConnections": ["localhost"]}, monkeypatch=monkeypatch) as app:
            with networking.udp_connect("localhost", port) as sock:
                assert sock.type == socket.SOCK_DGRAM
                sock.settimeout(5)
                sock.send(b"datagram")
                data, peer = server.recvfrom(100)
                assert data == b"datagram"
                server.sendto(b"answer", peer)
                assert sock.recv(100) == b"answer"
            with pytest.raises(PermissionDeniedError) as info:
                networking.udp_connect("example.com", port)
            assert info.value.capability == "AllowedConnections"
            assert len(app.denials()) == 1


def test_listen_tcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, other = free_port(), free_port()
    with serve_app(tmp_path, {"AllowedTcpServerPorts": [port]}, monkeypatch=monkeypatch) as app:
        with networking.listen_tcp(port) as server:
            assert server.getsockname() == (LOOPBACK, port)  # the bind address is the OS's setting
            with socket.create_connection((LOOPBACK, port), timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"in")
                    assert conn.recv(2) == b"in"
            # The port is taken while the app holds it.
            with pytest.raises(RequestError, match=f"TCP port {port} is already in use") as info:
                networking.listen_tcp(port)
            assert info.value.code == "unavailable"
        with pytest.raises(PermissionDeniedError, match=f"TCP port {other}") as denied:
            networking.listen_tcp(other)
        assert denied.value.capability == "AllowedTcpServerPorts"
        assert app.denials() == [
            f"AllowedTcpServerPorts: net.listen_tcp: the app manifest does not list TCP port {other} "
            "(AllowedTcpServerPorts)"
        ]


def test_bind_udp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    with serve_app(tmp_path, {"AllowedUdpServerPorts": [port]}, monkeypatch=monkeypatch) as app:
        with networking.bind_udp(port) as server:
            server.settimeout(5)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.sendto(b"hi", (LOOPBACK, port))
                assert server.recvfrom(10)[0] == b"hi"
            with pytest.raises(RequestError, match=f"UDP port {port} is already in use"):
                networking.bind_udp(port)
        with pytest.raises(PermissionDeniedError) as info:
            networking.bind_udp(port + 1 if port < 65535 else port - 1)
        assert info.value.capability == "AllowedUdpServerPorts"
        assert len(app.denials()) == 1


def test_server_ports_without_the_capability(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_app(tmp_path, {"AllowedConnections": ["localhost"]}, monkeypatch=monkeypatch) as app:
        with pytest.raises(PermissionDeniedError) as tcp:
            networking.listen_tcp(8080)
        with pytest.raises(PermissionDeniedError) as udp:
            networking.bind_udp(8080)
        assert (tcp.value.capability, udp.value.capability) == ("AllowedTcpServerPorts", "AllowedUdpServerPorts")
        assert len(app.denials()) == 2
