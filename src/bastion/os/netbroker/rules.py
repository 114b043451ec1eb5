"""``AllowedConnections`` matching, as Azure Sphere defines it. Pure: no I/O.

Rules (each entry of the manifest's list):

* a host name matches that name only, compared case-insensitively
  (``Example.COM`` matches ``example.com``; ``www.example.com`` does not);
* ``*.contoso.com`` matches every name below ``contoso.com``
  (``a.contoso.com``, ``a.b.contoso.com``) but not ``contoso.com`` itself;
* an IPv4 address matches that address only. Wildcards never match addresses.

A request names a host the same way: a host name or a dotted-quad IPv4
address. Bastion checks the name the app asked for, not the address it
resolves to, because the OS itself resolves and connects. So a raw IP that is
not listed is refused even when a listed name resolves to it (Azure Sphere's
firewall opens the addresses that a listed name resolved to; see
docs/adr/0007-connection-broker.md for why Bastion is stricter).

Example:
    >>> rules = ("Broker.Example.com", "*.contoso.com", "10.0.0.7")
    >>> [host_allowed(rules, h) for h in ("broker.example.com", "api.contoso.com", "contoso.com")]
    [True, True, False]
    >>> [host_allowed(rules, h) for h in ("10.0.0.7", "10.0.0.8")]
    [True, False]
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

from bastion.images.manifest_schema import IPV4_PATTERN, MAX_HOSTNAME_LENGTH

__all__ = ["HostNameError", "host_allowed", "is_ipv4_literal", "normalize_host"]

#: A request's host name: labels of letters, digits and inner hyphens (no wildcard).
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_IPV4 = re.compile(IPV4_PATTERN)
_WILDCARD = "*."


class HostNameError(ValueError):
    """A requested host is neither a host name nor a dotted-quad IPv4 address."""


def is_ipv4_literal(host: str) -> bool:
    """Whether ``host`` is a canonical dotted-quad IPv4 address (``10.0.0.7``, not ``10.7``)."""
    return _IPV4.fullmatch(host) is not None


def _legacy_ipv4(host: str) -> bool:
    """Whether the C resolver would read ``host`` as an address (``127.1``, ``0x7f000001``)."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def normalize_host(host: str) -> str:
    """The canonical form of a requested host: lower case, no trailing dot.

    Raises:
        HostNameError: empty, too long, a wildcard, a non-canonical IPv4 form
            (which the resolver would read as some address), or not a host name.
    """
    name = host[:-1] if host.endswith(".") else host
    name = name.lower()
    if not name or len(name) > MAX_HOSTNAME_LENGTH:
        raise HostNameError(f"a host is 1..{MAX_HOSTNAME_LENGTH} characters")
    if is_ipv4_literal(name):
        return name
    if _legacy_ipv4(name) or re.fullmatch(r"[0-9.]+", name):
        raise HostNameError(f"{name[:64]!r} is not a dotted-quad IPv4 address")
    if _NAME.fullmatch(name) is None:
        raise HostNameError(f"{name[:64]!r} is not a host name or an IPv4 address")
    return name


def _rule_matches(rule: str, host: str) -> bool:
    rule = rule.lower()
    if rule.startswith(_WILDCARD):
        suffix = rule[1:]  # ".contoso.com"
        return not is_ipv4_literal(host) and host.endswith(suffix) and len(host) > len(suffix)
    return rule == host


def host_allowed(rules: Iterable[str], host: str) -> bool:
    """Whether ``host`` (already :func:`normalize_host`-ed) is allowed by ``rules``."""
    return any(_rule_matches(rule, host) for rule in rules)
