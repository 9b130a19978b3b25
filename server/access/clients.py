"""Who is calling, by network address: is the caller on this machine?

    clients = ClientAddresses.from_setting("10.0.0.0/8,envoy")   # AIGC_TRUSTED_PROXIES
    clients.is_local(peer, metadata)     # peer: "ipv4:1.2.3.4:5", "ipv6:[::1]:5", "unix:/s" or an IP

With no caller keys configured (AIGC_AUTH=auto), callers on this machine are
served without a key and every other caller needs one (server/access/keys.py).
The caller's address is the direct peer's - over gRPC `context.peer()`, on the
OpenAI door aiohttp's `request.remote` - except behind a proxy: Envoy's peer
is Envoy, so Envoy sets CLIENT_ADDRESS_HEADER to its own caller's address on
every route, overwriting whatever a client sent (gateway/envoy.yaml). That
header is believed only when the direct peer is loopback or one of
AIGC_TRUSTED_PROXIES; from anyone else it is ignored, so a client cannot
claim to be local. A header that does not parse as an IP address counts as
a remote caller: when in doubt, ask for the key.

A unix-socket peer is on this machine by definition: local.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

CLIENT_ADDRESS_HEADER = "x-aigc-client-address"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Unix:
    """The peer of a unix-socket connection: this machine."""


UNIX = _Unix()


def parse_peer(peer: str | None) -> IPAddress | _Unix | None:
    """The address in a gRPC peer string or a plain IP; UNIX for a unix socket; None if unknown."""
    if not peer:
        return None
    if peer.startswith(("unix:", "unix-abstract:")):
        return UNIX
    text = peer
    if peer.startswith("ipv4:"):
        text = peer[5:].rpartition(":")[0]
    elif peer.startswith("ipv6:"):
        text = peer[5:].rpartition(":")[0].removeprefix("[").removesuffix("]")
    text = text.partition("%")[0]  # an IPv6 zone (fe80::1%eth0)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def _loopback(address: IPAddress | _Unix | None) -> bool:
    return address is UNIX or (address is not None and not isinstance(address, _Unix) and address.is_loopback)


class ClientAddresses:
    def __init__(self, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self.trusted_proxies = tuple(trusted_proxies)

    @classmethod
    def from_setting(cls, raw: str) -> ClientAddresses:
        """AIGC_TRUSTED_PROXIES: comma-separated CIDRs, IPs or host names (resolved now,
        at start). Raises ValueError naming an entry that is none of these."""
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            try:
                infos = socket.getaddrinfo(item, None, proto=socket.IPPROTO_TCP)
            except OSError:
                raise ValueError(
                    f"{item!r} is not a CIDR, an IP address or a host name that resolves"
                ) from None
            networks += [ipaddress.ip_network(info[4][0].partition("%")[0]) for info in infos]
        return cls(networks)

    def trusted(self, address: IPAddress | _Unix | None) -> bool:
        if _loopback(address):
            return True
        if address is None or isinstance(address, _Unix):
            return False
        return any(address in network for network in self.trusted_proxies)

    def client(self, peer: str | None, metadata: Iterable[tuple[str, Any]]) -> IPAddress | _Unix | None:
        """The caller's address: the trusted proxy's header if the peer is one, else the peer."""
        direct = parse_peer(peer)
        if not self.trusted(direct):
            return direct
        for name, value in metadata:
            if name == CLIENT_ADDRESS_HEADER and isinstance(value, str):
                return parse_peer(value.strip())  # unparseable: unknown, so remote
        return direct

    def is_local(self, peer: str | None, metadata: Iterable[tuple[str, Any]]) -> bool:
        return _loopback(self.client(peer, metadata))


__all__ = ["CLIENT_ADDRESS_HEADER", "ClientAddresses", "parse_peer"]
