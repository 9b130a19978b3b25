"""The HTTP client under every remote provider: one pooled connection pool per
upstream, a POST that answers Server-Sent Events, and transport failures
classified once.

Why not the vendor SDKs: every provider here speaks plain JSON over HTTP and
SSE, and its translation is a pure function over dicts (see each provider's
`wire.py`). The SDKs build a model object per chunk and transform requests
through type introspection - measured at about 40% of the server's CPU under
load - and each brings its own retry layer, while retries here live in one
place (server/core/retry.py). What the SDKs did that matters is here: proxies
from the environment (HTTP, HTTPS, SOCKS via socksio), per-read timeouts, the
caller's deadline, and connections closed as soon as a consumer stops reading.

httpx2 is the client the openai and anthropic SDKs are built on (pinned in
requirements.txt): same proxy and TLS behaviour as before the SDKs were
dropped.

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
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx2

from server.errors import UpstreamError, UpstreamFailure

# Error bodies are read for classification only; a vendor (or a proxy's HTML
# page) sending more is cut here.
MAX_ERROR_BODY = 64 * 1024

ErrorClassifier = Callable[[int, Mapping[str, str], bytes], UpstreamError]


@dataclasses.dataclass(slots=True)
class SseEvent:
    """One server-sent event: its `event:` name ("" when none) and its `data` bytes."""

    name: str
    data: bytes


class HttpTransport:
    """A pooled HTTP client bound to one upstream's base URL and headers."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout_seconds: float,
        trust_env: bool = True,
        keepalive_expiry: float = 30.0,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.provider = provider
        self.timeout_seconds = timeout_seconds
        self.secrets = secrets
        self._client = httpx2.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            timeout=httpx2.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
            # No cap on connections: a thousand concurrent streams to one
            # vendor must not queue for a free connection.
            limits=httpx2.Limits(
                max_connections=None, max_keepalive_connections=1000, keepalive_expiry=keepalive_expiry
            ),
            # False: ignore HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, .netrc (the local model).
            trust_env=trust_env,
        )

    async def close(self) -> None:
        await self._client.aclose()

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
        request = self._client.build_request(
            "POST",
            path,
            content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
            headers={"content-type": "application/json", "accept": "text/event-stream"},
            params=params,
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._client.send(request, stream=True)
        except TimeoutError as exc:
            raise self._deadline_passed() from exc
        except httpx2.TimeoutException as exc:
            raise self.error(
                UpstreamFailure.TIMEOUT, f"no answer within {self.timeout_seconds:.3g}s"
            ) from exc
        except httpx2.TransportError as exc:  # refused, reset, DNS, TLS, proxy
            raise self.error(UpstreamFailure.UNREACHABLE, _describe(exc)) from exc
        try:
            request_id = response.headers.get(request_id_header) if request_id_header else None
            if response.status_code != 200 or not _is_event_stream(response.headers):
                raise await self._error_answer(response, on_error, deadline)
            yield SseStream(self, response, deadline, request_id)
        finally:
            await response.aclose()

    async def _error_answer(
        self, response: httpx2.Response, on_error: ErrorClassifier, deadline: float | None
    ) -> UpstreamError:
        body = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                async for piece in response.aiter_raw():
                    body += piece
                    if len(body) >= MAX_ERROR_BODY:
                        break
        except (TimeoutError, httpx2.TransportError):
            pass  # classify what arrived
        return on_error(response.status_code, response.headers, bytes(body[:MAX_ERROR_BODY]))

    def _deadline_passed(self) -> UpstreamError:
        return self.error(UpstreamFailure.TIMEOUT, "no answer within the caller's deadline")


class SseStream:
    """The events of one 200 `text/event-stream` answer, read as they arrive."""

    def __init__(
        self,
        transport: HttpTransport,
        response: httpx2.Response,
        deadline: float | None,
        request_id: str | None,
    ) -> None:
        self._transport = transport
        self._response = response
        self._deadline = deadline
        #: The vendor's request id header, for error metadata.
        self.request_id = request_id
        self.headers = response.headers

    def __aiter__(self) -> AsyncIterator[SseEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[SseEvent]:
        raw = self._response.aiter_raw()
        parser = SseParser()
        transport = self._transport
        while True:
            try:
                if self._deadline is None:
                    piece = await anext(raw)
                else:
                    async with asyncio.timeout_at(self._deadline):
                        piece = await anext(raw)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise transport._deadline_passed() from exc
            except httpx2.TimeoutException as exc:
                raise transport.error(
                    UpstreamFailure.TIMEOUT,
                    f"stream stalled: nothing for {transport.timeout_seconds:.3g}s",
                    upstream_request_id=self.request_id,
                ) from exc
            except httpx2.TransportError as exc:
                raise transport.error(
                    UpstreamFailure.STREAM_INTERRUPTED, _describe(exc), upstream_request_id=self.request_id
                ) from exc
            for event in parser.feed(piece):
                yield event
        for event in parser.close():
            yield event


class SseParser:
    """Incremental Server-Sent Events parser over bytes (the WHATWG framing).

    Works on bytes, so a multi-byte character split across network reads is
    whole again by the time an event's data is decoded. Lines end in LF,
    CRLF or CR; an empty line ends an event; `data:` lines are joined with LF;
    comments (`:` lines, keep-alives) and `id:`/`retry:` are skipped.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._name = ""
        self._data: list[bytes] = []

    def feed(self, piece: bytes) -> list[SseEvent]:
        buffer = self._buffer + piece
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
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._name = value.decode("utf-8", "replace")


def _is_event_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}"
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text


__all__ = ["MAX_ERROR_BODY", "ErrorClassifier", "HttpTransport", "SseEvent", "SseParser", "SseStream"]
