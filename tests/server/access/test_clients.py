"""Who counts as a caller on this machine (server/access/clients.py): the peer forms
grpc and aiohttp give, and when a proxy's x-aigc-client-address is believed."""

from __future__ import annotations

import ipaddress

import pytest

from server.access.clients import CLIENT_ADDRESS_HEADER, ClientAddresses, parse_peer
from server.config import Settings
from server.envvars import ConfigError


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.8.9.10:5000", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:[::ffff:127.0.0.1]:5000", True),
        ("unix:/tmp/socket", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("ipv4:192.0.2.2:5000", False),
        ("ipv6:[fd00::2]:5000", False),
        ("ipv6:[::ffff:192.0.2.2]:5000", False),
        ("192.0.2.2", False),
        ("", False),
        ("nonsense", False),
    ],
)
def test_the_peer_alone_decides_without_a_trusted_proxy(peer, local):
    assert ClientAddresses().is_local(peer, ()) is local


def test_the_header_counts_only_from_a_trusted_peer():
    clients = ClientAddresses([ipaddress.ip_network("10.0.0.0/8")])
    says_local = [(CLIENT_ADDRESS_HEADER, "127.0.0.1")]
    says_remote = [(CLIENT_ADDRESS_HEADER, "203.0.113.9")]
    assert not clients.is_local("ipv4:192.0.2.2:1", says_local)  # untrusted: its claim is ignored
    assert clients.is_local("ipv4:10.1.2.3:1", says_local)  # a trusted proxy
    assert not clients.is_local("ipv4:127.0.0.1:1", says_remote)  # loopback is always trusted
    assert not clients.is_local("ipv4:127.0.0.1:1", [(CLIENT_ADDRESS_HEADER, "not an address")])
    assert clients.is_local("ipv4:127.0.0.1:1", ())  # no header: the peer itself


def test_trusted_proxies_take_cidrs_addresses_and_host_names():
    clients = ClientAddresses.from_setting("10.0.0.0/8, 192.0.2.7,localhost")
    assert parse_peer("ipv4:10.9.9.9:1") in clients.trusted_proxies[0]
    assert clients.trusted(parse_peer("192.0.2.7"))
    assert not clients.trusted(parse_peer("192.0.2.8"))
    with pytest.raises(ConfigError, match="AIGC_TRUSTED_PROXIES"):
        Settings.from_env({"AIGC_TRUSTED_PROXIES": "no-such-host.invalid"})
