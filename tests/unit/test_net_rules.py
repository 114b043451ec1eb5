"""AllowedConnections matching (Azure Sphere's rules) and request host validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.os.netbroker.rules import HostNameError, host_allowed, is_ipv4_literal, normalize_host

RULES = ("Broker.Example.com", "*.contoso.com", "10.0.0.7")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("broker.example.com", True),  # case-insensitive
        ("BROKER.EXAMPLE.COM", True),
        ("www.broker.example.com", False),  # exact: no subdomains without a wildcard
        ("example.com", False),
        ("api.contoso.com", True),  # the wildcard matches any name below the domain
        ("a.b.contoso.com", True),
        ("contoso.com", False),  # ...but not the domain itself
        ("evilcontoso.com", False),
        ("contoso.com.evil.net", False),
        ("10.0.0.7", True),  # IPv4: exact
        ("10.0.0.8", False),
        ("10.0.0.70", False),
    ],
)
def test_matching(host: str, allowed: bool) -> None:
    assert host_allowed(RULES, normalize_host(host)) is allowed


def test_wildcard_never_matches_an_address() -> None:
    assert not host_allowed(("*.0.0.1",), "127.0.0.1")
    assert not host_allowed(("*.1",), normalize_host("10.0.0.1"))


def test_nothing_listed_allows_nothing() -> None:
    assert not host_allowed((), "localhost")


@pytest.mark.parametrize(
    "host",
    [
        "",
        "*.contoso.com",  # a request names one host
        "127.1",  # the C resolver reads these as addresses
        "0x7f000001",
        "017.0.0.1",
        "2130706433",
        "256.0.0.1",
        "::1",
        "[::1]",
        "a..b",
        "-a.com",
        "a_b.com",
        "host name",
        "a" * 254,
        "localhost:80",
    ],
)
def test_malformed_request_hosts_are_refused(host: str) -> None:
    with pytest.raises(HostNameError):
        normalize_host(host)


def test_normalization() -> None:
    assert normalize_host("LocalHost.") == "localhost"
    assert normalize_host("10.0.0.7") == "10.0.0.7"
    assert is_ipv4_literal("10.0.0.7")
    assert not is_ipv4_literal("10.0.0.07")


@given(st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True))
def test_wildcard_matches_exactly_the_names_below(label: str) -> None:
    try:
        name = normalize_host(f"{label}.contoso.com")
    except HostNameError:
        return
    assert host_allowed(("*.contoso.com",), name)
    assert not host_allowed(("*.contoso.com",), normalize_host("contoso.com"))
    assert host_allowed((f"{label}.contoso.com".upper(),), name)


def test_public_names_are_pinned() -> None:
    from bastion.applibs import networking
    from bastion.os import credentials
    from bastion.os.appservices import network
    from bastion.os.netbroker import broker, rules, tunnel

    assert set(networking.__all__) == {"bind_udp", "connect", "listen_tcp", "tls_connect", "udp_connect"}
    assert set(rules.__all__) == {"HostNameError", "host_allowed", "is_ipv4_literal", "normalize_host"}
    assert set(broker.__all__) == {
        "CONNECTIONS_CAPABILITY",
        "TCP_PORTS_CAPABILITY",
        "UDP_PORTS_CAPABILITY",
        "NetworkService",
        "NetworkSettings",
        "Resolver",
        "system_resolver",
    }
    assert set(tunnel.__all__) == {"TunnelInfo", "TunnelRegistry", "tls_client_context"}
    assert set(credentials.__all__) == {"DeviceCredentials", "DeviceCredentialsService", "tenant_of_certificate"}
    assert set(network.__all__) == {"DEVICE_AUTH_CAPABILITY", "OPERATIONS"}
    assert {op.name for op in network.OPERATIONS} == {
        "net.connect",
        "net.udp_connect",
        "net.listen_tcp",
        "net.bind_udp",
        "net.tls_connect",
    }
    for module in (networking, rules, broker, tunnel, credentials, network):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
