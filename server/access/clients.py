"""Who is calling, by network address: is the caller on this machine?

    clients = ClientAddresses.from_setting("10.0.0.0/8,envoy")   # AIGC_TRUSTED_PROXIES (names re-resolved)
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
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

CLIENT_ADDRESS_HEADER = "x-aigc-client-address"

log = logging.getLogger(__name__)

# RFC 1123 host names (dots between labels of letters, digits and hyphens).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")

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
    """The trusted proxies (AIGC_TRUSTED_PROXIES): networks, and host names.

    A host name is resolved again every RESOLVE_EVERY_SECONDS, in a thread, never
    in the caller's event loop: in compose or Kubernetes the proxy's name may not
    resolve yet when the server starts (Envoy waits for the server to be healthy),
    and its address changes when its container is replaced. Until a name
    resolves, its peers are simply not trusted (a caller behind it counts as
    remote, so it needs a key: the safe side)."""

    RESOLVE_EVERY_SECONDS = 10.0

    def __init__(self, trusted_proxies: Sequence[IPNetwork] = (), host_names: Sequence[str] = ()) -> None:
        self.trusted_proxies = tuple(trusted_proxies)
        self.host_names = tuple(host_names)
        self._resolved: tuple[IPNetwork, ...] = ()
        self._resolved_at = -math.inf
        self._resolving = threading.Lock()
        if self.host_names:
            self._resolve()

    @classmethod
    def from_setting(cls, raw: str) -> ClientAddresses:
        """AIGC_TRUSTED_PROXIES: comma-separated CIDRs, IPs or host names. Raises
        ValueError naming an entry that is none of these."""
        networks: list[IPNetwork] = []
        names: list[str] = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if not _HOST_NAME.fullmatch(item):
                raise ValueError(f"{item!r} is not a CIDR, an IP address or a host name")
            names.append(item)
        return cls(networks, names)

    def _resolve(self) -> None:
        """Resolve the host names now (blocking); keeps the last good answer of a name that fails."""
        if not self._resolving.acquire(blocking=False):
            return  # another thread is at it
        try:
            found: list[IPNetwork] = []
            for name in self.host_names:
                try:
                    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
                except OSError:
                    log.info("trusted proxy %r does not resolve (yet)", name)
                    continue
                found += [ipaddress.ip_network(info[4][0].partition("%")[0]) for info in infos]
            if found or not self._resolved:
                self._resolved = tuple(found)
            self._resolved_at = time.monotonic()
        finally:
            self._resolving.release()

    def _names_stale(self) -> bool:
        return bool(self.host_names) and time.monotonic() - self._resolved_at > self.RESOLVE_EVERY_SECONDS

    def trusted(self, address: IPAddress | _Unix | None) -> bool:
        if _loopback(address):
            return True
        if address is None or isinstance(address, _Unix):
            return False
        if any(address in network for network in self.trusted_proxies):
            return True
        if any(address in network for network in self._resolved):
            return True
        if self._names_stale():
            # Not in the last answer, and that answer is old: ask again, off this thread.
            self._resolved_at = time.monotonic()
            threading.Thread(target=self._resolve, name="trusted-proxy-dns", daemon=True).start()
        return False

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
