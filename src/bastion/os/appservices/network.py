"""Network operations: the OS connects, binds and does mutual TLS; the app gets the socket.

=====================  ==============================  =========================================
op                     capability                      the app gets
=====================  ==============================  =========================================
``net.connect``        AllowedConnections              a connected TCP socket
``net.udp_connect``    AllowedConnections              a connected UDP socket
``net.listen_tcp``     AllowedTcpServerPorts           a listening TCP socket
``net.bind_udp``       AllowedUdpServerPorts           a bound UDP socket
``net.tls_connect``    DeviceAuthentication (+ the     the plaintext end of a TLS tunnel the OS
                       host in AllowedConnections)     runs with the device certificate and key
=====================  ==============================  =========================================

Host matching follows Azure Sphere (:mod:`bastion.os.netbroker.rules`); every
refusal names its capability and is recorded as ``app_denied`` by the choke
point. ``DeviceAuthentication`` holds a tenant ID: the OS refuses it unless the
device attested to that tenant. The server is verified against the CA PEM the
app sends (``ca_pem_b64``) or, without one, against the root CAs the app keeps
in its CertStore (capability ``CertStore``). The device key never leaves the OS.
"""

from __future__ import annotations

import socket

from bastion.images.manifest_schema import MAX_HOSTNAME_LENGTH
from bastion.os.appservices.certstore import CertStoreService
from bastion.os.appservices.registry import (
    AppContext,
    Args,
    BadRequestError,
    DeniedError,
    Operation,
    Reply,
    UnavailableError,
    arg_b64,
    arg_int,
    arg_str,
)
from bastion.os.credentials import DeviceCredentialsService
from bastion.os.errors import CredentialsError
from bastion.os.netbroker.broker import NetworkService
from bastion.os.netbroker.tunnel import tls_client_context

__all__ = ["DEVICE_AUTH_CAPABILITY", "OPERATIONS"]

DEVICE_AUTH_CAPABILITY = "DeviceAuthentication"
_MAX_PORT = 65535
#: A request's host may carry one trailing dot beyond the name bound.
_MAX_HOST_ARG = MAX_HOSTNAME_LENGTH + 1


def _host_port(args: Args) -> tuple[str, int]:
    return arg_str(args, "host", max_chars=_MAX_HOST_ARG), arg_int(args, "port", low=1, high=_MAX_PORT)


def _address(sock: socket.socket, *, peer: bool) -> str:
    """The peer's (or our own) address; a socket that lost its peer already is closed."""
    try:
        name = sock.getpeername() if peer else sock.getsockname()
    except OSError as exc:
        sock.close()
        raise UnavailableError(f"the connection closed at once: {exc.strerror}") from None
    return str(name[0]) if isinstance(name, tuple) and name else ""


def _hand_over(sock: socket.socket, port: int, *, peer: bool) -> Reply:
    """Reply with ``sock`` passed to the app (the server closes our copy of the fd once sent)."""
    address = _address(sock, peer=peer)
    return Reply({"address": address, "port": port}, [sock.detach()])


def _connect(ctx: AppContext, args: Args) -> Reply:
    host, port = _host_port(args)
    sock = ctx.service(NetworkService).open_tcp(ctx.capabilities.allowed_connections, host, port)
    return _hand_over(sock, port, peer=True)


def _udp_connect(ctx: AppContext, args: Args) -> Reply:
    host, port = _host_port(args)
    sock = ctx.service(NetworkService).open_udp(ctx.capabilities.allowed_connections, host, port)
    return _hand_over(sock, port, peer=True)


def _listen_tcp(ctx: AppContext, args: Args) -> Reply:
    port = arg_int(args, "port", low=1, high=_MAX_PORT)
    sock = ctx.service(NetworkService).listen_tcp(ctx.capabilities.allowed_tcp_server_ports, port)
    return _hand_over(sock, port, peer=False)


def _bind_udp(ctx: AppContext, args: Args) -> Reply:
    port = arg_int(args, "port", low=1, high=_MAX_PORT)
    sock = ctx.service(NetworkService).bind_udp(ctx.capabilities.allowed_udp_server_ports, port)
    return _hand_over(sock, port, peer=False)


def _server_roots(ctx: AppContext, args: Args, net: NetworkService) -> bytes:
    """The CAs that verify the server: the request's PEM, else the app's CertStore roots."""
    if "ca_pem_b64" in args:
        return arg_b64(args, "ca_pem", max_bytes=net.settings.max_ca_pem_bytes)
    if not ctx.capabilities.cert_store:
        raise BadRequestError("net.tls_connect needs the CA that verifies the server (ca_pem_b64, or CertStore)")
    roots = ctx.service(CertStoreService).roots(ctx.component_id)
    if not roots:
        raise BadRequestError("the app's CertStore holds no root CA to verify the server with")
    return b"\n".join(roots)


def _tls_connect(ctx: AppContext, args: Args) -> Reply:
    host, port = _host_port(args)
    net = ctx.service(NetworkService)
    creds = ctx.service(DeviceCredentialsService)
    name = net.check_host(ctx.capabilities.allowed_connections, host)
    try:
        current = creds.current()
    except CredentialsError as exc:
        raise UnavailableError(f"no device certificate for DeviceAuthentication: {exc}") from None
    wanted = (ctx.capabilities.device_authentication or "").lower()
    if current.tenant_id.lower() != wanted:
        raise DeniedError(
            f"DeviceAuthentication names tenant {wanted}, but this device belongs to another tenant",
            capability=DEVICE_AUTH_CAPABILITY,
        )
    context = tls_client_context(_server_roots(ctx, args, net))
    try:
        creds.load_into(context)
    except CredentialsError as exc:
        raise UnavailableError(f"no device certificate for DeviceAuthentication: {exc}") from None
    raw = net.open_tcp(ctx.capabilities.allowed_connections, name, port)
    address = _address(raw, peer=True)
    app_end, info = net.tunnels.open(ctx.component_id, raw, context, name)
    result = {
        "address": address,
        "port": port,
        "tls_version": info.version,
        "cipher": info.cipher,
        "server_subject": info.peer_subject,
        "device_id": current.device_id,
    }
    return Reply(result, [app_end.detach()])


OPERATIONS = (
    Operation("net.connect", _connect, capability="AllowedConnections"),
    Operation("net.udp_connect", _udp_connect, capability="AllowedConnections"),
    Operation("net.listen_tcp", _listen_tcp, capability="AllowedTcpServerPorts"),
    Operation("net.bind_udp", _bind_udp, capability="AllowedUdpServerPorts"),
    Operation("net.tls_connect", _tls_connect, capability=DEVICE_AUTH_CAPABILITY),
)
