"""Who counts as a caller on this machine (server/access/clients.py): the peer forms
grpc and aiohttp give, and when a proxy's x-aigc-client-address is believed."""

from __future__ import annotations

import ipaddress
import socket
import time

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
        Settings.from_env({"AIGC_TRUSTED_PROXIES": "not a host!"})


def test_a_proxy_name_that_does_not_resolve_yet_is_trusted_once_it_does(monkeypatch):
    # In compose the server starts before Envoy exists: its name resolves only later.
    answers: list[str] = []

    def getaddrinfo(name, *args, **kwargs):
        if not answers:
            raise socket.gaierror("no such host (yet)")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    clients = ClientAddresses.from_setting("envoy")  # no error at start
    envoy = parse_peer("ipv4:172.18.0.5:4000")
    assert not clients.trusted(envoy)  # not resolved: not trusted (the caller needs a key)
    answers.append("172.18.0.5")
    clients._resolved_at -= ClientAddresses.RESOLVE_EVERY_SECONDS + 1
    assert not clients.trusted(envoy)  # this miss asks again, in a thread
    _wait_for(lambda: clients.trusted(envoy))
    answers.append("172.18.0.9")  # Envoy's container replaced: a new address
    clients._resolved_at -= ClientAddresses.RESOLVE_EVERY_SECONDS + 1
    moved = parse_peer("ipv4:172.18.0.9:4000")
    clients.trusted(moved)
    _wait_for(lambda: clients.trusted(moved))
    assert not clients.trusted(envoy)  # the old address is no longer trusted


def _wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the name was not resolved again"
        time.sleep(0.01)
