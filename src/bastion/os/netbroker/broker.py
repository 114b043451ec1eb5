"""The OS side of every app connection: check the manifest, resolve, connect or bind, hand over.

:class:`NetworkService` is what the ``net.*`` handlers use. Each call takes
the app's grant (its ``AllowedConnections`` list or server ports) with the
request, so no socket is made before the check. Name resolution and connects
are bounded in time (:class:`NetworkSettings`); the resolver is injectable
(tests map names to loopback). IPv4 only, as Azure Sphere's AllowedConnections.

Example::

    net = NetworkService(NetworkSettings(bind_address="127.0.0.1"))
    sock = net.open_tcp(manifest.capabilities.allowed_connections, "broker.example.com", 8883)
    fd = sock.detach()      # passed to the app by SCM_RIGHTS
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bastion.os.appservices.registry import BadRequestError, DeniedError, UnavailableError
from bastion.os.netbroker.rules import HostNameError, host_allowed, is_ipv4_literal, normalize_host
from bastion.os.netbroker.tunnel import TunnelRegistry

__all__ = [
    "CONNECTIONS_CAPABILITY",
    "TCP_PORTS_CAPABILITY",
    "UDP_PORTS_CAPABILITY",
    "NetworkService",
    "NetworkSettings",
    "Resolver",
    "system_resolver",
]

CONNECTIONS_CAPABILITY = "AllowedConnections"
TCP_PORTS_CAPABILITY = "AllowedTcpServerPorts"
UDP_PORTS_CAPABILITY = "AllowedUdpServerPorts"

#: ``resolver(host, port, socktype)`` -> IPv4 socket addresses, in preference order.
Resolver = Callable[[str, int, int], list[tuple[str, int]]]


@dataclass(frozen=True)
class NetworkSettings:
    """Addresses, time bounds and counts of the connection broker.

    Attributes:
        bind_address: the local address server ports are bound on.
        resolve_timeout_s: bound on one name resolution.
        connect_timeout_s: bound on one connect, over all the addresses tried.
        handshake_timeout_s: bound on the TLS handshake of ``net.tls_connect``.
        max_addresses: how many resolved addresses a connect tries.
        max_resolutions: name resolutions in flight at once (each is a thread).
        listen_backlog: backlog of a TCP server socket.
        max_tunnels_per_app: TLS tunnels one app may have open at once.
        tunnel_buffer_bytes: bound on the bytes a tunnel holds per direction.
        tunnel_poll_s: how often a tunnel thread looks at the stop flag when idle.
        tunnel_linger_s: how long a closing tunnel may take to deliver what it holds.
        max_ca_pem_bytes: bound on the CA PEM an app sends with ``net.tls_connect``.
    """

    bind_address: str = "0.0.0.0"  # noqa: S104 - a device serves its LAN; tests use 127.0.0.1
    resolve_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    max_addresses: int = 4
    max_resolutions: int = 8
    listen_backlog: int = 16
    max_tunnels_per_app: int = 4
    tunnel_buffer_bytes: int = 64 * 1024
    tunnel_poll_s: float = 0.5
    tunnel_linger_s: float = 5.0
    max_ca_pem_bytes: int = 64 * 1024


def system_resolver(host: str, port: int, socktype: int) -> list[tuple[str, int]]:
    """The host's resolver (``getaddrinfo``), IPv4 only.

    Raises:
        OSError: the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, socket.AF_INET, socktype)
    return [(str(info[4][0]), int(info[4][1])) for info in infos]


def _refused(host: str) -> DeniedError:
    return DeniedError(
        f"the app manifest does not allow connections to {host} (AllowedConnections)",
        capability=CONNECTIONS_CAPABILITY,
    )


class NetworkService:
    """Connects and binds for apps, after checking their grant.

    Args:
        settings: bounds and the bind address.
        resolver: name resolution (default: :func:`system_resolver`).
    """

    def __init__(self, settings: NetworkSettings | None = None, *, resolver: Resolver | None = None) -> None:
        self.settings = settings or NetworkSettings()
        self._resolver = resolver or system_resolver
        self._resolutions = threading.BoundedSemaphore(self.settings.max_resolutions)
        self.tunnels = TunnelRegistry(self.settings)

    # -- the grant -------------------------------------------------------------

    def check_host(self, allowed: Sequence[str], host: str) -> str:
        """The normalized host, if ``allowed`` (AllowedConnections) lists it.

        Raises:
            BadRequestError: ``host`` is not a host name or dotted-quad IPv4 address.
            DeniedError: the manifest does not allow it (capability ``AllowedConnections``).
        """
        try:
            name = normalize_host(host)
        except HostNameError as exc:
            raise BadRequestError(str(exc)) from None
        if not host_allowed(allowed, name):
            raise _refused(name)
        return name

    # -- resolution --------------------------------------------------------------

    def resolve(self, host: str, port: int, socktype: int) -> list[tuple[str, int]]:
        """The addresses of an (already allowed) host, in bounded time.

        An IPv4 literal is its own address and is never looked up.

        Raises:
            UnavailableError: the name does not resolve, not in time, or too many
                resolutions are in flight.
        """
        if is_ipv4_literal(host):
            return [(host, port)]
        if not self._resolutions.acquire(blocking=False):
            raise UnavailableError("too many name resolutions in progress; try again")
        done = threading.Event()
        box: list[list[tuple[str, int]] | OSError] = []

        def work() -> None:
            try:
                box.append(self._resolver(host, port, socktype))
            except OSError as exc:
                box.append(exc)
            finally:
                self._resolutions.release()
                done.set()

        # A thread, so the wait is bounded: getaddrinfo itself has no timeout.
        threading.Thread(target=work, name="resolve", daemon=True).start()
        if not done.wait(self.settings.resolve_timeout_s):
            raise UnavailableError(f"{host} did not resolve within {self.settings.resolve_timeout_s:g} s")
        result = box[0]
        if isinstance(result, OSError):
            reason = result.strerror or type(result).__name__
            raise UnavailableError(f"{host} does not resolve to an IPv4 address ({reason})")
        if not result:
            raise UnavailableError(f"{host} does not resolve to an IPv4 address")
        return result[: self.settings.max_addresses]

    # -- client sockets ----------------------------------------------------------

    def open_tcp(self, allowed: Sequence[str], host: str, port: int) -> socket.socket:
        """A TCP connection to ``host:port`` (blocking mode), if ``allowed`` lists ``host``.

        Raises:
            BadRequestError: a malformed host.
            DeniedError: the host is not allowed.
            UnavailableError: resolution or connect failed or timed out.
        """
        name = self.check_host(allowed, host)
        addresses = self.resolve(name, port, socket.SOCK_STREAM)
        deadline = time.monotonic() + self.settings.connect_timeout_s
        reason = "no address to try"
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = "timed out"
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(remaining)
            try:
                sock.connect(address)
            except TimeoutError:
                sock.close()
                reason = "timed out"
                continue
            except OSError as exc:
                sock.close()
                reason = exc.strerror or type(exc).__name__
                continue
            sock.settimeout(None)
            return sock
        raise UnavailableError(f"cannot connect to {name}:{port}: {reason}")

    def open_udp(self, allowed: Sequence[str], host: str, port: int) -> socket.socket:
        """A UDP socket connected to ``host:port``, if ``allowed`` lists ``host``.

        Raises:
            BadRequestError: a malformed host.
            DeniedError: the host is not allowed.
            UnavailableError: resolution failed or the socket cannot be connected.
        """
        name = self.check_host(allowed, host)
        address = self.resolve(name, port, socket.SOCK_DGRAM)[0]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            raise UnavailableError(f"cannot connect a UDP socket to {name}:{port}: {exc.strerror}") from None
        return sock

    # -- server sockets ----------------------------------------------------------

    def listen_tcp(self, allowed_ports: Sequence[int], port: int) -> socket.socket:
        """A listening TCP socket on the bind address, if ``allowed_ports`` lists ``port``.

        Raises:
            DeniedError: the port is not in AllowedTcpServerPorts.
            UnavailableError: the port is taken or cannot be bound.
        """
        if port not in allowed_ports:
            raise DeniedError(
                f"the app manifest does not list TCP port {port} (AllowedTcpServerPorts)",
                capability=TCP_PORTS_CAPABILITY,
            )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Rebinding after a restart must not wait for TIME_WAIT; on Linux this
        # does not let a second socket listen on the same port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._bind(sock, "TCP", port)
        sock.listen(self.settings.listen_backlog)
        return sock

    def bind_udp(self, allowed_ports: Sequence[int], port: int) -> socket.socket:
        """A UDP socket bound on the bind address, if ``allowed_ports`` lists ``port``.

        Raises:
            DeniedError: the port is not in AllowedUdpServerPorts.
            UnavailableError: the port is taken or cannot be bound.
        """
        if port not in allowed_ports:
            raise DeniedError(
                f"the app manifest does not list UDP port {port} (AllowedUdpServerPorts)",
                capability=UDP_PORTS_CAPABILITY,
            )
        # No SO_REUSEADDR: for UDP on Linux it would let two sockets share the port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._bind(sock, "UDP", port)
        return sock

    def _bind(self, sock: socket.socket, kind: str, port: int) -> None:
        try:
            sock.bind((self.settings.bind_address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise UnavailableError(f"{kind} port {port} is already in use on the device") from None
            raise UnavailableError(f"cannot bind {kind} port {port}: {exc.strerror}") from None

    def close(self) -> None:
        """Close every TLS tunnel (the OS is stopping)."""
        self.tunnels.close()
