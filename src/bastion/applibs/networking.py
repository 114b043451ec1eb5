"""Network access for apps: the OS connects or binds, and hands the app a real socket.

An app's sandbox has no route out. Each function here asks the OS, which
checks the app manifest (``AllowedConnections``, ``AllowedTcpServerPorts``,
``AllowedUdpServerPorts``, ``DeviceAuthentication``), makes the socket itself
and passes it back over the applibs socket. What the app gets is an ordinary
:class:`socket.socket` in blocking mode.

Example::

    from bastion.applibs import networking

    with networking.connect("api.contoso.com", 443) as sock:    # AllowedConnections
        sock.sendall(b"...")
    with networking.tls_connect("broker.contoso.com", 8883, ca_pem=ca) as tls:
        tls.sendall(mqtt_connect)    # the OS runs TLS with the device certificate

A refusal raises :class:`~bastion.applibs.errors.PermissionDeniedError` whose
``capability`` names what the manifest lacks.
"""

from __future__ import annotations

import base64
import socket
from typing import Any

from bastion.applibs._client import connection
from bastion.applibs._wire import close_fds
from bastion.applibs.errors import TransportError

__all__ = ["bind_udp", "connect", "listen_tcp", "tls_connect", "udp_connect"]


def _one_socket(op: str, args: dict[str, Any]) -> socket.socket:
    result, fds = connection().call_fds(op, args)
    del result
    if len(fds) != 1:
        close_fds(fds)
        raise TransportError(f"the OS answered {op} with {len(fds)} sockets instead of one")
    try:
        sock = socket.socket(fileno=fds[0])
    except OSError as exc:
        close_fds(fds)
        raise TransportError(f"the OS answered {op} with something that is not a socket") from exc
    sock.setblocking(True)
    return sock


def connect(host: str, port: int) -> socket.socket:
    """A TCP connection to ``host:port``; ``host`` must be allowed by AllowedConnections.

    Raises:
        PermissionDeniedError: the manifest does not allow ``host``.
        RequestError: the name does not resolve or the connect failed (``code`` "unavailable").
    """
    return _one_socket("net.connect", {"host": host, "port": port})


def udp_connect(host: str, port: int) -> socket.socket:
    """A UDP socket connected to ``host:port``; ``host`` must be allowed by AllowedConnections.

    Raises:
        PermissionDeniedError: the manifest does not allow ``host``.
        RequestError: the name does not resolve.
    """
    return _one_socket("net.udp_connect", {"host": host, "port": port})


def listen_tcp(port: int) -> socket.socket:
    """A listening TCP socket on ``port``, which AllowedTcpServerPorts must list.

    Raises:
        PermissionDeniedError: the manifest does not list ``port``.
        RequestError: the port is taken (``code`` "unavailable").
    """
    return _one_socket("net.listen_tcp", {"port": port})


def bind_udp(port: int) -> socket.socket:
    """A UDP socket bound on ``port``, which AllowedUdpServerPorts must list.

    Raises:
        PermissionDeniedError: the manifest does not list ``port``.
        RequestError: the port is taken (``code`` "unavailable").
    """
    return _one_socket("net.bind_udp", {"port": port})


def tls_connect(host: str, port: int, *, ca_pem: bytes | str | None = None) -> socket.socket:
    """A TLS connection to ``host:port`` that the OS authenticates with the device certificate.

    The OS does the TLS (mutual: it presents the device certificate of the
    tenant named by DeviceAuthentication, and verifies the server against
    ``host`` and ``ca_pem``, or, when ``ca_pem`` is None, the root CAs the app
    installed in its CertStore). The app gets the plaintext end; the device key
    never enters the app. Closing the socket closes the TLS connection.

    Raises:
        PermissionDeniedError: no DeviceAuthentication, another tenant, or
            ``host`` not in AllowedConnections (``capability`` says which).
        RequestError: no device certificate yet, the handshake failed, or the
            app has as many TLS connections open as it may.
    """
    args: dict[str, Any] = {"host": host, "port": port}
    if ca_pem is not None:
        pem = ca_pem.encode("ascii") if isinstance(ca_pem, str) else ca_pem
        args["ca_pem_b64"] = base64.b64encode(pem).decode("ascii")
    return _one_socket("net.tls_connect", args)
