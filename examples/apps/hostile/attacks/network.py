"""Attacks on the network without a capability: by name, by raw IP, UDP, raw, packet and netlink sockets.

The app's network namespace has no route out, and the seccomp filter kills
the app at its first socket of any family but ``AF_UNIX``: an app gets network
sockets only from the OS, already connected, by SCM_RIGHTS. Abstract unix
sockets belong to the network namespace, and the host's socket files are not
in the mount namespace.
"""

from __future__ import annotations

import socket

from attacks import Context, Outcome, attack, try_each

__all__: list[str] = []

#: A name that no resolver answers (RFC 6761), so even a working resolver sends nothing anywhere.
NAME = "bastion-hostile.invalid"


def _connect(family: int, kind: int, address: object, proto: int = 0) -> None:
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(2)
        sock.connect(address)


@attack("net_by_name", "kill")
def net_by_name(ctx: Context) -> Outcome:
    """Resolve a host name and connect to it (the resolver's own socket is the first try)."""

    def resolve_and_connect() -> None:
        for family, kind, proto, _, address in socket.getaddrinfo(NAME, ctx.port or 80, type=socket.SOCK_STREAM):
            _connect(family, kind, address, proto)

    def localhost() -> None:
        for family, kind, proto, _, address in socket.getaddrinfo("localhost", ctx.port or 80):
            _connect(family, kind, address, proto)

    return try_each([("resolve a name", resolve_and_connect), ("resolve localhost", localhost)])


@attack("net_raw_ip", "kill")
def net_raw_ip(ctx: Context) -> Outcome:
    """TCP to the host's loopback listener by address."""
    return try_each([("tcp 127.0.0.1", lambda: _connect(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", ctx.port)))])


@attack("net_ipv6", "kill")
def net_ipv6(ctx: Context) -> Outcome:
    """TCP over IPv6 loopback."""
    return try_each([("tcp ::1", lambda: _connect(socket.AF_INET6, socket.SOCK_STREAM, ("::1", ctx.port)))])


@attack("net_udp", "kill")
def net_udp(ctx: Context) -> Outcome:
    """A UDP datagram to the host's loopback listener."""

    def send() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return sock.sendto(b"hostile", ("127.0.0.1", ctx.port))

    return try_each([("udp sendto", send)])


@attack("net_raw_socket", "kill")
def net_raw_socket(ctx: Context) -> Outcome:
    """A raw IP socket (forged packets, ICMP)."""
    del ctx
    return try_each([("raw icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))])


@attack("net_packet_socket", "kill")
def net_packet_socket(ctx: Context) -> Outcome:
    """A packet socket (link layer: sniffing, spoofing)."""
    del ctx
    return try_each([("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300))])


@attack("net_netlink", "kill")
def net_netlink(ctx: Context) -> Outcome:
    """A netlink socket (routes, interfaces, the kernel's audit and uevents)."""
    del ctx
    return try_each([("netlink route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))])


@attack("net_abstract_unix")
def net_abstract_unix(ctx: Context) -> Outcome:
    """The host's abstract unix socket (abstract names belong to the network namespace)."""
    name = ctx.abstract or "bastion-hostile"
    return try_each(
        [
            ("stream", lambda: _connect(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + name)),
            ("seqpacket", lambda: _connect(socket.AF_UNIX, socket.SOCK_SEQPACKET, "\0" + name)),
        ]
    )


@attack("net_unix_paths")
def net_unix_paths(ctx: Context) -> Outcome:
    """Socket files on the host: the OS's control socket, a container daemon's, the X server's."""
    paths = ctx.under_dev("os-state", "control.sock") + [
        "/run/docker.sock", "/var/run/docker.sock", "/tmp/.X11-unix/X0", "/run/systemd/private",
        "/run/dbus/system_bus_socket",
    ]  # fmt: skip
    return try_each([(f"connect {p}", lambda p=p: _connect(socket.AF_UNIX, socket.SOCK_STREAM, p)) for p in paths])
