"""An HTTP proxy (CONNECT tunnels and plain forwarding) and a SOCKS5 proxy.

Each records every connection it relayed as "host:port" in `relayed`, so a
test can prove a call went through it (or did not). `hosts` is the proxy's
own name resolution: a test upstream called `upstream.test` exists only for
the proxy, so a request that reaches it cannot have bypassed the proxy.
Both can demand credentials (Basic `Proxy-Authorization`, SOCKS5
username/password) and count the attempts they refused.

They run on an asyncio loop in a background thread (`LoopThread`), because
the server under test is a subprocess driven by blocking calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import struct
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from tests.fakes.http import FakeServer

_T = TypeVar("_T")


class LoopThread:
    """`with LoopThread() as loop: loop.run(coro)` - an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-proxies", daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 10) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class _Relay:
    scheme = ""

    def __init__(
        self, *, hosts: Mapping[str, str] | None = None, username: str = "", password: str = ""
    ) -> None:
        self.hosts = dict(hosts or {})
        self.username = username
        self.password = password
        self.relayed: list[str] = []
        self.refused = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        auth = f"{self.username}:{self.password}@" if self.username else ""
        return f"{self.scheme}://{auth}127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        upstream = await asyncio.open_connection(self.hosts.get(host, host), port)
        self.relayed.append(f"{host}:{port}")
        self._writers.add(upstream[1])
        return upstream

    async def _splice(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        await asyncio.gather(_pipe(client[0], upstream[1]), _pipe(upstream[0], client[1]))
        self._writers.discard(upstream[1])


class HttpProxy(_Relay):
    """CONNECT host:port tunnels (https:// targets) and absolute-form forwarding (http://)."""

    scheme = "http"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers = dict(line.split(":", 1) for line in header_lines if ":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        if self.username and headers.get("proxy-authorization") != _basic(self.username, self.password):
            self.refused += 1
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
            )
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await self._connect(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._splice((reader, writer), upstream)
            return
        # Absolute form: http://host:port/path. The upstream gets the origin form.
        rest = target.split("://", 1)[1]
        authority, slash, path = rest.partition("/")
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "80")
        upstream = await self._connect(host, int(port))
        kept = [line for line in header_lines if line and not line.lower().startswith("proxy-")]
        upstream[1].write(
            f"{method} {slash}{path} {version}\r\n".encode("latin-1")
            + "".join(f"{line}\r\n" for line in kept).encode("latin-1")
            + b"\r\n"
        )
        await self._splice((reader, writer), upstream)


class Socks5Proxy(_Relay):
    """SOCKS5 CONNECT (RFC 1928), with RFC 1929 username/password when set."""

    scheme = "socks5"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5:
            return
        wanted = 2 if self.username else 0
        if wanted not in methods:
            writer.write(b"\x05\xff")
            self.refused += 1
            return
        writer.write(bytes([5, wanted]))
        await writer.drain()
        if wanted == 2:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            ok = (user, password) == (self.username, self.password)
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            await writer.drain()
            if not ok:
                self.refused += 1
                return
        _, command, _, address_type = await reader.readexactly(4)
        if address_type == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif address_type == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != 1:
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")  # command not supported
            return
        upstream = await self._connect(host, port)
        writer.write(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        await writer.drain()
        await self._splice((reader, writer), upstream)


class FakeUpstream(FakeServer):
    """tests/fakes' scripted server, on a chosen loopback address, optionally over TLS,
    and called by `name` in its base URL (which only a proxy's `hosts` may know)."""

    def __init__(self, host: str = "127.0.0.1", *, name: str = "", ssl: Any = None) -> None:
        super().__init__()
        self.host = host
        self.name = name or host
        self._ssl = ssl

    @property
    def base_url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.name}:{self.port}"

    async def __aenter__(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
