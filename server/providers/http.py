"""The HTTP client under every remote provider: one connection pool per
upstream, a POST that answers Server-Sent Events, and transport failures
classified once.

Why not the vendor SDKs: every provider here speaks plain JSON over HTTP and
SSE, and its translation is a pure function over dicts (see each provider's
`wire.py`). The SDKs build a model object per chunk and transform requests
through type introspection - measured at about 40% of the server's CPU under
load - and each brings its own retry layer, while retries here live in one
place (server/core/retry.py).

Why aiohttp: measured on one core against the same fast upstream (50
concurrent 20-chunk streams), aiohttp costs 90-140 µs of CPU per request and
httpx2 (the client under the openai and anthropic SDKs) 800-1,100 µs: its
parser is C (llhttp) and it runs on asyncio directly, where httpx's stack goes
through anyio and sniffio on every read (bench/README.md has the profile).

What the SDKs did that matters is here: proxies from the environment
(`proxy_for`: HTTP_PROXY / HTTPS_PROXY / ALL_PROXY incl. SOCKS, NO_PROXY,
lower case winning, as httpx and curl read them), per-read timeouts, the
caller's deadline, and connections closed as soon as a consumer stops reading.

    async with transport.post_sse(path, body, deadline=..., on_error=...) as events:
        async for event in events:      # SseEvent(name, data bytes)
            ...

`on_error(status, headers, body)` is the provider's classifier: it turns an
error answer (or a 200 that is not an event stream) into an UpstreamError.
Everything else - refused connections, proxies, timeouts, a stream cut by the
network, the caller's deadline - is classified here, the same for every vendor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from server.errors import UpstreamError, UpstreamFailure

# Error bodies are read for classification only; a vendor (or a proxy's HTML
# page) sending more is cut here.
MAX_ERROR_BODY = 64 * 1024

ErrorClassifier = Callable[[int, Mapping[str, str], bytes], UpstreamError]


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a call to an upstream may take, per phase (seconds).

    connect: to open the connection. first_token: from the request to the
    first event of the answer (a reasoning model can think a while).
    idle: between two reads once the answer streams. total: the whole call.
    The caller's own deadline applies on top. Each error says which fired
    (ErrorInfo metadata `timeout`).
    """

    total: float = 600.0
    connect: float = 10.0
    first_token: float = 120.0
    idle: float = 60.0


@dataclasses.dataclass(slots=True)
class SseEvent:
    """One server-sent event: its `event:` name ("" when none) and its `data` bytes."""

    name: str
    data: bytes


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL for requests to `url` from the environment, or None (direct).

    HTTP(S)_PROXY by the URL's scheme, else ALL_PROXY (which may be socks5://);
    NO_PROXY's hosts, domains and `*` go direct. Lower-case variables win, as
    in urllib, curl and httpx.
    """
    if environ is None:
        proxies = urllib.request.getproxies_environment()
    else:
        proxies = {}
        for name, value in environ.items():
            lowered = name.lower()
            if value and lowered.endswith("_proxy") and (lowered == name or lowered not in environ):
                proxies[lowered[: -len("_proxy")]] = value
    parts = urllib.parse.urlsplit(url)
    no_proxy = proxies.get("no", "")
    if no_proxy and _bypassed(parts.hostname or "", parts.port, no_proxy):
        return None
    return proxies.get(parts.scheme) or proxies.get("all") or None


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False


class HttpTransport:
    """A pooled HTTP client bound to one upstream's base URL and headers.

    Create it inside the event loop that will use it (aiohttp binds to it).
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout_seconds: float | None = None,
        timeouts: Timeouts | None = None,
        trust_env: bool = True,
        keepalive_expiry: float = 30.0,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        if timeouts is None:
            timeouts = Timeouts() if timeout_seconds is None else Timeouts(total=timeout_seconds)
        # No phase outlasts the whole call.
        self.timeouts = timeouts = Timeouts(
            total=timeouts.total,
            connect=min(timeouts.connect, timeouts.total),
            first_token=min(timeouts.first_token, timeouts.total),
            idle=min(timeouts.idle, timeouts.total),
        )
        self._headers = {**headers, "content-type": "application/json", "accept": "text/event-stream"}
        # The proxy is decided once: an upstream has one base URL.
        # trust_env=False: never a proxy (the local model on loopback).
        proxy = proxy_for(self.base_url) if trust_env else None
        # A proxy's password never shows in an error (aiohttp quotes proxy URLs).
        self.secrets = (*secrets, *_credentials(proxy))
        self._proxy: str | None = None
        if proxy and proxy.split("://", 1)[0].lower().startswith("socks"):
            from aiohttp_socks import ProxyConnector  # only with a SOCKS proxy

            # rdns: the proxy resolves the vendor's name, as httpx and the
            # SDKs did for socks5:// too (a name only the proxy can resolve works).
            connector: aiohttp.BaseConnector = ProxyConnector.from_url(
                proxy, limit=0, keepalive_timeout=keepalive_expiry, rdns=True
            )
        else:
            self._proxy = proxy
            # limit=0: no cap on connections, so a thousand concurrent streams
            # to one vendor never queue for a free one.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive_expiry)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # The other phases are timed here (post_sse, SseStream), to say which fired.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=None),
            # We pass the proxy ourselves: the environment is not read again.
            trust_env=False,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            headers={"user-agent": "aigc-service"},
        )

    async def close(self) -> None:
        await self._session.close()

    def error(self, failure: UpstreamFailure, message: str, **fields: Any) -> UpstreamError:
        return UpstreamError(failure, message, provider=self.provider, secrets=self.secrets, **fields)

    @contextlib.asynccontextmanager
    async def post_sse(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        on_error: ErrorClassifier,
        deadline: float | None,
        params: Mapping[str, str] | None = None,
        request_id_header: str = "",
    ) -> AsyncIterator[SseStream]:
        """POSTs `body` as JSON and yields the answer's events; closes the response on exit.

        Raises UpstreamError before yielding when no 200 event stream came back.
        """
        loop = asyncio.get_running_loop()
        timeouts = self.timeouts
        started = loop.time()
        limit = _Limit(started + timeouts.total, "total")
        if deadline is not None and deadline < limit.at:
            limit = _Limit(deadline, "deadline")
        first_token = min(limit.at, started + timeouts.first_token)
        request = self._session.post(
            self.base_url + path,
            data=orjson.dumps(body),
            headers=self._headers,
            params=params,
            proxy=self._proxy,
        )
        try:
            async with asyncio.timeout_at(first_token):
                response = await request
        except aiohttp.ConnectionTimeoutError as exc:
            raise self.timed_out("connect") from exc
        except TimeoutError as exc:
            # Which limit was the nearer one, not the clock: a timer may fire
            # a hair before its time.
            raise self.timed_out(limit.kind if first_token >= limit.at else "first_token") from exc
        except aiohttp.ClientError as exc:  # refused, reset, DNS, TLS, proxy
            raise self.error(UpstreamFailure.UNREACHABLE, _describe(exc)) from exc
        try:
            request_id = response.headers.get(request_id_header) if request_id_header else None
            if response.status != 200 or not _is_event_stream(response.headers):
                raise await self._error_answer(response, on_error, limit.at)
            yield SseStream(self, response, limit, first_token, request_id)
        finally:
            # Closes the connection if the body was not read to its end (the
            # caller went away): the vendor stops generating.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def post_json(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        on_error: ErrorClassifier,
        deadline: float | None,
        params: Mapping[str, str] | None = None,
        request_id_header: str = "",
    ) -> tuple[Any, str | None]:
        """POSTs `body` as JSON and returns the decoded 200 answer and the vendor's request id
        (embeddings: a unary call, nothing to stream). The whole call - answer body
        included - is bounded by the first_token timeout, the total and the deadline;
        an answer that is not JSON is MALFORMED_RESPONSE."""
        loop = asyncio.get_running_loop()
        timeouts = self.timeouts
        started = loop.time()
        limit = _Limit(started + timeouts.total, "total")
        if deadline is not None and deadline < limit.at:
            limit = _Limit(deadline, "deadline")
        until = min(limit.at, started + timeouts.first_token)
        headers = {**self._headers, "accept": "application/json"}
        request_id: str | None = None
        try:
            async with asyncio.timeout_at(until):
                async with self._session.post(
                    self.base_url + path,
                    data=orjson.dumps(body),
                    headers=headers,
                    params=params,
                    proxy=self._proxy,
                ) as response:
                    request_id = response.headers.get(request_id_header) if request_id_header else None
                    if response.status != 200:
                        raise await self._error_answer(response, on_error, limit.at)
                    raw = await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise self.timed_out("connect") from exc
        except TimeoutError as exc:
            raise self.timed_out(limit.kind if until >= limit.at else "first_token", request_id) from exc
        except aiohttp.ClientError as exc:  # refused, reset, DNS, TLS, proxy, a body cut short
            raise self.error(
                UpstreamFailure.UNREACHABLE, _describe(exc), upstream_request_id=request_id
            ) from exc
        try:
            return orjson.loads(raw), request_id
        except ValueError as exc:
            raise self.error(
                UpstreamFailure.MALFORMED_RESPONSE,
                f"unparseable answer: {exc}",
                upstream_request_id=request_id,
            ) from exc

    async def _error_answer(
        self, response: aiohttp.ClientResponse, on_error: ErrorClassifier, deadline: float
    ) -> UpstreamError:
        body = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                async for piece in response.content.iter_any():
                    body += piece
                    if len(body) >= MAX_ERROR_BODY:
                        break
        except (TimeoutError, aiohttp.ClientError):
            pass  # classify what arrived
        return on_error(response.status, response.headers, bytes(body[:MAX_ERROR_BODY]))

    def timed_out(self, kind: str, request_id: str | None = None) -> UpstreamError:
        t = self.timeouts
        message = {
            "deadline": "no answer within the caller's deadline",
            "total": f"the call took longer than {t.total:.3g}s (timeout_seconds)",
            "connect": f"no connection within {t.connect:.3g}s (connect_timeout_seconds)",
            "first_token": f"no first token within {t.first_token:.3g}s (first_token_timeout_seconds)",
            "idle": f"stream stalled: nothing for {t.idle:.3g}s (idle_timeout_seconds)",
        }[kind]
        return self.error(UpstreamFailure.TIMEOUT, message, upstream_request_id=request_id, timeout=kind)


@dataclasses.dataclass(frozen=True, slots=True)
class _Limit:
    """The end of a call: the caller's deadline or the upstream's total timeout."""

    at: float
    kind: str  # "deadline" | "total"


class SseStream:
    """The events of one 200 `text/event-stream` answer, read as they arrive."""

    def __init__(
        self,
        transport: HttpTransport,
        response: aiohttp.ClientResponse,
        limit: _Limit,
        first_token: float,
        request_id: str | None,
    ) -> None:
        self._transport = transport
        self._response = response
        self._limit = limit
        self._first_token = first_token
        #: The vendor's request id header, for error metadata.
        self.request_id = request_id
        self.headers = response.headers

    def __aiter__(self) -> AsyncIterator[SseEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[SseEvent]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[SseEvent]]:
        """The events as they arrive, one list per network read that completed any.

        A provider turns each list into one Chunk (`merge_chunks`): events
        that arrived together go on together, in one message to the caller,
        instead of one message each - the same text, no later, for less work
        when a vendor sends faster than it is read.
        """
        content = self._response.content
        parser = SseParser()
        transport = self._transport
        limit = self._limit
        idle = transport.timeouts.idle
        loop = asyncio.get_running_loop()
        first = True
        while True:
            # Until the first event: the first-token limit; then each read
            # gets the idle limit. Never past the call's end.
            until = self._first_token if first else min(limit.at, loop.time() + idle)
            try:
                async with asyncio.timeout_at(until):
                    piece = await content.readany()
            except TimeoutError as exc:
                kind = limit.kind if until >= limit.at else ("first_token" if first else "idle")
                raise transport.timed_out(kind, self.request_id) from exc
            except aiohttp.ClientError as exc:
                raise transport.error(
                    UpstreamFailure.STREAM_INTERRUPTED, _describe(exc), upstream_request_id=self.request_id
                ) from exc
            if not piece:
                break
            events = parser.feed(piece)
            if events:
                first = False
                yield events
        events = parser.close()
        if events:
            yield events


class SseParser:
    """Incremental Server-Sent Events parser over bytes (the WHATWG framing).

    Works on bytes, so a multi-byte character split across network reads is
    whole again by the time an event's data is decoded. Lines end in LF,
    CRLF or CR; an empty line ends an event; `data:` lines are joined with LF;
    comments (`:` lines, keep-alives) and `id:`/`retry:` are skipped.
    """

    __slots__ = ("_buffer", "_data", "_name")

    def __init__(self) -> None:
        self._buffer = b""
        self._name = ""
        self._data: list[bytes] = []

    def feed(self, piece: bytes) -> list[SseEvent]:
        buffer = self._buffer + piece if self._buffer else piece
        if b"\r" not in buffer and not self._data and not self._name:
            fast = self._fast(buffer)
            if fast is not None:
                return fast
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF: wait for more.
            keep = buffer.endswith(b"\r")
            text = buffer[:-1] if keep else buffer
            buffer = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if keep else b"")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()  # an unfinished line
        events: list[SseEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def _fast(self, buffer: bytes) -> list[SseEvent] | None:
        """The common framing - `data: {...}` then a blank line, LF only - in
        one split, or None for anything else (then the line-by-line path)."""
        blocks = buffer.split(b"\n\n")
        rest = blocks.pop()
        events: list[SseEvent] = []
        for block in blocks:
            if not block.startswith(b"data: ") or b"\n" in block:
                return None
            events.append(SseEvent("", block[6:]))
        self._buffer = rest
        return events

    def close(self) -> list[SseEvent]:
        """Events still pending when the body ended (a last event without its blank line)."""
        events: list[SseEvent] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r"), events)
            self._buffer = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SseEvent]) -> None:
        if not line:
            if self._data:
                events.append(SseEvent(self._name, b"\n".join(self._data)))
            self._name, self._data = "", []
            return
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            value = line[6:]
            self._name = (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")


def _is_event_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def _credentials(url: str | None) -> tuple[str, ...]:
    if not url:
        return ()
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    found = [parts.password, parts.username and parts.password and f"{parts.username}:{parts.password}"]
    return tuple(urllib.parse.unquote(v) for v in found if v) + tuple(v for v in found if v)


_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}"
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    # Any URL's user:password part (a proxy's) is cut, whatever the library quoted.
    return _USERINFO.sub("***@", text)


__all__ = [
    "MAX_ERROR_BODY",
    "ErrorClassifier",
    "HttpTransport",
    "SseEvent",
    "SseParser",
    "SseStream",
    "Timeouts",
    "proxy_for",
]
