"""A tiny HTTP/1.1 server with byte-level control, for fake vendor APIs.

Real sockets on 127.0.0.1, port 0, TCP_NODELAY. Each request is recorded
(method, path, headers, body) and answered by the next scripted `Reply`:

    fake.script(Respond(200, body), Stream([b"data: ...\\n\\n", ...]), Hang())

(`ByRequest` picks one of two replies by what the request asked for; `Checked`
refuses a request the way its vendor would.)

`Stream` writes each piece as its own HTTP chunk and drains it before the
next, so a piece boundary is a real network write: split a character's UTF-8
bytes across two pieces and the client gets them in two reads. It can end
properly (the terminating zero-size chunk), be cut (the socket closed without
it), or be held open until the client goes away - which the server records in
`client_gone`, so a test can prove that the client closed the connection.

The vendor modules next to this one (openai_fake, gemini_fake, anthropic_fake)
build the exact bytes of each vendor's bodies and SSE events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import socket
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """The server side of one client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, status: int, headers: Mapping[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        await self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def wait_client_gone(self) -> None:
        """Returns when the client closes its side (EOF or reset)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass


class Reply:
    """What the fake sends for one request. Returns False to close the connection."""

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        raise NotImplementedError


@dataclasses.dataclass
class Respond(Reply):
    """A whole response with Content-Length (a JSON body unless `content_type` says otherwise)."""

    status: int
    body: bytes | Mapping[str, Any] = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    content_type: str = "application/json"

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        body = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        headers = {"content-type": self.content_type, "content-length": str(len(body)), **self.headers}
        await conn.head(self.status, headers)
        await conn.write(body)
        return True


@dataclasses.dataclass
class Stream(Reply):
    """A chunked `text/event-stream` response, one network write per piece.

    end: "done" sends the terminating chunk; "cut" closes the socket without
    it (a stream cut mid-way); "hold" keeps the connection open, sending
    nothing more, until the client disconnects.
    `pause` seconds between pieces make separate client reads near certain
    (TCP_NODELAY and a drain already make each piece its own segment).
    """

    pieces: list[bytes]
    status: int = 200
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    end: str = "done"
    pause: float = 0.0

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        headers = {"content-type": "text/event-stream", "transfer-encoding": "chunked", **self.headers}
        await conn.head(self.status, headers)
        for i, piece in enumerate(self.pieces):
            if i and self.pause:
                await asyncio.sleep(self.pause)
            await conn.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        if self.end == "done":
            await conn.write(b"0\r\n\r\n")
            return True
        if self.end == "hold":
            await conn.wait_client_gone()
            server.client_gone.set()
        return False


@dataclasses.dataclass
class ByRequest(Reply):
    """`streamed` if the request asked for a stream (`wants_stream(request)`), else `unary`.

    What a vendor does: the same call answers as JSON or as SSE depending on
    the request. The provider tests script the exact shape they expect; this
    serves tests further away (the whole server) that should not care.
    """

    unary: Reply
    streamed: Reply
    wants_stream: Callable[[Recorded], bool]

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        reply = self.streamed if self.wants_stream(server.requests[-1]) else self.unary
        return await reply.send(conn, server)


@dataclasses.dataclass
class Checked(Reply):
    """`reply`, unless `check(request)` finds the request one the real vendor refuses:
    then the error Reply it returns. What makes a fake refuse what its vendor
    refuses (a missing signature, a missing `reasoning_content`), so a test of
    a multi-turn conversation fails where the vendor would."""

    check: Callable[[Recorded], Reply | None]
    reply: Reply

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        refusal = self.check(server.requests[-1])
        return await (refusal or self.reply).send(conn, server)


class Hang(Reply):
    """Never answers: no status line, no bytes, until the client gives up."""

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        await conn.wait_client_gone()
        server.client_gone.set()
        return False


class FakeServer:
    """`async with FakeServer() as fake:` - then `fake.base_url`, `fake.script(...)`, `fake.requests`."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Recorded] = []
        self.client_gone = asyncio.Event()
        self._replies: collections.deque[Reply] = collections.deque()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        # Closing our side ends every handler (reads see EOF, writes fail).
        for writer in list(self._writers):
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(reader, writer)
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                reply = self._replies.popleft() if self._replies else _UNSCRIPTED
                if not await reply.send(conn, self):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> Recorded | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Recorded(method, path, headers, body)


def split_inside(data: bytes, char: str) -> list[bytes]:
    """`data` cut in two in the middle of the UTF-8 bytes of the first `char`."""
    encoded = char.encode()
    assert len(encoded) > 1, "needs a multi-byte character"
    at = data.index(encoded) + 1
    return [data[:at], data[at:]]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_UNSCRIPTED = Respond(599, {"error": {"message": "fake server: no scripted reply left"}})
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    529: "Overloaded",
}
