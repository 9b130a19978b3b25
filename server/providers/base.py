"""The provider interface: what every vendor module implements.

    Provider.stream(request)   an async context manager: entering it opens the
                               vendor's stream (or raises UpstreamError); the
                               value is an async iterator of `Chunk`s; leaving
                               it - normally, on error, or because the caller
                               went away - closes the upstream at once.

    async with provider.stream(request) as chunks:
        async for chunk in chunks:
            ...

The lifetime is a scope (as httpx's `client.stream()` and pydantic-ai's
`request_stream`), so wrappers - retries, fallback, quotas - can wrap it
without caring which generator object the vendor module hands out.

Providers speak our types - the generated `aigc.v1` messages - on one side
and their vendor's wire JSON on the other. They raise only `UpstreamError`
(server/errors.py) for vendor failures; anything else is a bug. The one place
a stream is folded into a whole answer, and checked for its finish, is
server/core/fold.py; unary calls are always the stream folded, because only
closing a stream reliably stops a vendor from generating for nobody.

What the SSE vendors (openai/, anthropic/, gemini/) share is here too:
RemoteProvider's pooled transport, its MALFORMED / upstream errors and event
decoding, and merged_batches - one Chunk per network read, what arrived before
a failure delivered first.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, model_pb2
from server.errors import UpstreamError, UpstreamFailure
from server.providers.embeddings import EmbeddingRequest, Embeddings
from server.providers.endpoints import Endpoint, Endpoints
from server.providers.http import HttpTransport, SseEvent, SseStream, Timeouts

Part = content_pb2.Part
Usage = generation_pb2.Usage
Capability = int  # an aigc.v1.Capability value

# Header values this long are treated as secrets (see RemoteProvider.secrets).
_MIN_SECRET_HEADER = 8
# What a vendor event of the wrong shape raises when a translator reads it
# (a missing key, a string where a list was due, ...): MALFORMED_RESPONSE.
SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)

ALL_CAPABILITIES: frozenset[Capability] = frozenset(
    v for v in model_pb2.Capability.values() if v != model_pb2.CAPABILITY_UNSPECIFIED
)


@dataclasses.dataclass(slots=True)
class ProviderRequest:
    """One generation, validated, as a provider receives it.

    Exactly one of `chat` and `prompt` is set: `prompt` only for models with
    CAPABILITY_RAW_COMPLETION (the core turns a completion for any other model
    into a one-message chat).
    """

    # The model's name at the vendor.
    upstream_model: str
    chat: aigc_service_pb2.ChatRequest | None = None
    prompt: str | None = None
    config: generation_pb2.GenerationConfig = dataclasses.field(
        default_factory=generation_pb2.GenerationConfig
    )
    user_id: str = ""
    # Merged into the vendor's request body; its keys were checked against
    # the provider's `reserved_vendor_keys`, and whole numbers are ints.
    vendor_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Event-loop time by which the caller's deadline passes (minus a margin),
    # None when the caller set none.
    deadline: float | None = None


@dataclasses.dataclass(slots=True)
class Chunk:
    """One piece of a streamed answer.

    `parts` are deltas carrying `Part.index` (see aigc_service.proto): text
    and reasoning append text, a tool call appends `arguments` and repeats
    its id and name. `finish` (an aigc.v1.FinishReason) and `usage` each
    arrive once, on the last chunks - vendors send them separately, e.g.
    OpenAI's usage-only chunk.
    """

    parts: list[content_pb2.Part] = dataclasses.field(default_factory=list)
    finish: int = 0
    usage: generation_pb2.Usage | None = None
    response_id: str = ""


class Provider(abc.ABC):
    """A vendor behind one interface. One instance serves many models."""

    #: The provider's name in responses and ListModels, e.g. "local", "openai".
    name: str
    #: Top-level keys of the vendor's request body that the typed request
    #: controls here; `vendor_params` may not set them (INVALID_ARGUMENT).
    reserved_vendor_keys: frozenset[str] = frozenset()
    #: What this adapter can translate at all; a model's configured
    #: capabilities are clamped to it.
    supported_capabilities: frozenset[Capability] = ALL_CAPABILITIES
    #: Retries of a failed attempt before the first chunk (server/core/retry.py).
    max_retries: int = 0
    #: The most texts one embeddings call takes at this vendor: the core
    #: splits larger batches (server/core/embedding.py).
    max_embedding_inputs: int = 2048
    #: Like reserved_vendor_keys, for the embeddings request body.
    reserved_embedding_keys: frozenset[str] = frozenset()

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What `upstream/model` passthrough models of this provider may use."""
        return self.supported_capabilities

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Acquires resources (clients, a local runtime). Called once before serving."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases what `start` acquired."""

    def ready(self) -> bool:
        """True when the provider can serve (e.g. its API key is configured).

        Must not do I/O: ListModels and every request call it.
        """
        return True

    def not_ready_hint(self) -> str:
        """What an operator must do to make `ready()` true (e.g. "set OPENAI_API_KEY")."""
        return "see the server log"

    def validate(self, request: ProviderRequest) -> Mapping[str, str]:
        """Field path -> why, for what this provider cannot translate (the core
        refuses the request with INVALID_ARGUMENT); empty when all is well."""
        return {}

    @abc.abstractmethod
    def stream(self, request: ProviderRequest) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        """Opens the vendor's stream for `request` (see the module docstring)."""

    def validate_embedding(self, request: EmbeddingRequest) -> Mapping[str, str]:
        """Like `validate`, for an embeddings batch (e.g. output_dimensions on a model
        that cannot shorten its vectors)."""
        return {}

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """The vectors of one batch (server/providers/embeddings.py). Only called
        for models with CAPABILITY_EMBEDDINGS, which a provider without this
        method never gives its models."""
        raise NotImplementedError(f"provider {self.name!r} has no embeddings")


class RemoteProvider(Provider):
    """A vendor reached over HTTP, usually with an API key.

    Every remote provider (openai, anthropic, gemini) takes exactly this
    constructor, so configuration code can build any of them the same way.
    `timeout_seconds` bounds the whole call, the other timeouts its phases
    (server/providers/http.py `Timeouts`); the caller's deadline applies on
    top. `base_urls` and `api_keys` add pairs to balance over
    (server/providers/endpoints.py).
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str,
        requires_key: bool = True,
        max_retries: int = 2,
        timeout_seconds: float = 600.0,
        connect_timeout_seconds: float = 10.0,
        first_token_timeout_seconds: float = 120.0,
        idle_timeout_seconds: float = 60.0,
        default_headers: Mapping[str, str] | None = None,
        trust_env: bool = True,
        base_urls: Sequence[str] = (),
        api_keys: Sequence[str] = (),
        max_embedding_inputs: int = 2048,
    ) -> None:
        self.name = name
        self.max_embedding_inputs = max_embedding_inputs
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.requires_key = requires_key
        self.max_retries = max_retries
        self.timeout_seconds = timeout_seconds
        self.timeouts = Timeouts(
            total=timeout_seconds,
            connect=connect_timeout_seconds,
            first_token=first_token_timeout_seconds,
            idle=idle_timeout_seconds,
        )
        self.default_headers = dict(default_headers or {})
        self.trust_env = trust_env
        self.base_urls = (self.base_url, *(u.rstrip("/") for u in base_urls))
        self.api_keys = (api_key, *api_keys)
        self._endpoints: Endpoints | None = None

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers that carry `key` (vendor-specific)."""
        return {"authorization": f"Bearer {key}"} if key else {}

    def _new_transport(self, base_url: str, key: str) -> HttpTransport:
        return HttpTransport(
            self.name,
            base_url,
            {**self.default_headers, **self.auth_headers(key)},
            timeouts=self.timeouts,
            trust_env=self.trust_env,
            secrets=self.secrets,
        )

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = Endpoints(
                [
                    Endpoint(self._new_transport(url, key), f"{url} key #{k + 1}")
                    for url in self.base_urls
                    for k, key in enumerate(self.api_keys)
                ]
            )
        return self._endpoints

    @property
    def transport(self) -> HttpTransport:
        """The first endpoint's client (for code that needs only one)."""
        return self.endpoints.all[0].transport

    @contextlib.asynccontextmanager
    async def post_sse(self, path: str, body: Mapping[str, Any], **options: Any) -> AsyncIterator[SseStream]:
        """`HttpTransport.post_sse` on the next endpoint; a failure there counts against it."""
        endpoints = self.endpoints
        endpoint = endpoints.pick()
        try:
            async with endpoint.transport.post_sse(path, body, **options) as events:
                yield events
        except UpstreamError as error:
            endpoints.failed(endpoint, error)
            raise

    async def post_json(self, path: str, body: Mapping[str, Any], **options: Any) -> tuple[Any, str | None]:
        """`HttpTransport.post_json` on the next endpoint; a failure there counts against it."""
        endpoints = self.endpoints
        endpoint = endpoints.pick()
        try:
            return await endpoint.transport.post_json(path, body, **options)
        except UpstreamError as error:
            endpoints.failed(endpoint, error)
            raise

    async def start(self) -> None:
        # Built now, not on the first request, so a bad base URL or header
        # stops the server at start-up.
        _ = self.endpoints

    async def close(self) -> None:
        endpoints, self._endpoints = self._endpoints, None
        if endpoints is not None:
            for endpoint in endpoints.all:
                await endpoint.transport.close()

    def ready(self) -> bool:
        return bool(self.api_key) or not self.requires_key

    def not_ready_hint(self) -> str:
        return "set its API key"

    @property
    def secrets(self) -> tuple[str, ...]:
        """What error messages must never show (see errors.redact): the API key
        and every `default_headers` value of 8 characters or more.

        Header values from `header_envs` are credentials, but a provider is not
        told which headers those are; a long value is treated as one (hiding a
        harmless value costs little; a short one would redact ordinary words).
        """
        headers = tuple(v for v in self.default_headers.values() if len(v) >= _MIN_SECRET_HEADER)
        return tuple(k for k in self.api_keys if k) + headers

    def upstream_error(
        self, failure: UpstreamFailure, message: str, request_id: str | None = None
    ) -> UpstreamError:
        """A failure of this vendor's that we find ourselves (not one it reported),
        with the vendor's request id where there is one."""
        return UpstreamError(
            failure, message, provider=self.name, upstream_request_id=request_id, secrets=self.secrets
        )

    def malformed(self, message: str, request_id: str | None = None) -> UpstreamError:
        """MALFORMED_RESPONSE: a body or an event of the vendor's that we cannot read."""
        return self.upstream_error(UpstreamFailure.MALFORMED_RESPONSE, message, request_id)

    def event_object(self, event: SseEvent, what: str, request_id: str | None = None) -> dict[str, Any]:
        """The event's JSON - the one decode it gets - which must be an object; else
        MALFORMED_RESPONSE, naming `what` the vendor calls it ("stream chunk", ...)."""
        try:
            data = orjson.loads(event.data)
        except ValueError as exc:
            raise self.malformed(f"unparseable {what}: {exc}", request_id) from exc
        if not isinstance(data, dict):
            raise self.malformed(f"{what} is a {type(data).__name__}, not an object", request_id)
        return data


async def merged_batches(
    events: SseStream,
    translate: Callable[[SseEvent], Chunk | None],
    end: Callable[[], Chunk | None],
    stop: Callable[[SseEvent], bool] | None = None,
) -> AsyncIterator[Chunk]:
    """The vendor's events as Chunks, one per network read (merge_chunks): events that
    arrived together go on together.

    `translate` turns one event into a Chunk (or None) and raises UpstreamError for a
    failure - what arrived before it in the same read still goes out first, so the
    caller gets every delta the vendor sent. `stop(event)`, asked after each event,
    says it was the vendor's end marker: nothing after it is read. `end()`, asked once
    the events are over, raises UpstreamError for an answer cut short (a clean close
    proves nothing) or returns a last Chunk, if the vendor's protocol leaves one.
    """
    async for batch in events.batches():
        chunks: list[Chunk] = []
        stopped = False
        try:
            for event in batch:
                chunk = translate(event)
                if chunk is not None:
                    chunks.append(chunk)
                if stop is not None and stop(event):
                    stopped = True
                    break
        except UpstreamError:
            if chunks:
                yield merge_chunks(chunks)
            raise
        if chunks:
            yield merge_chunks(chunks)
        if stopped:
            break
    last = end()
    if last is not None:
        yield last


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP Retry-After header as seconds: delta-seconds or an HTTP-date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def merge_chunks(chunks: Sequence[Chunk]) -> Chunk:
    """Several chunks that arrived together as one (see SseStream.batches).

    Consecutive deltas of the same part become one delta (text, reasoning
    text, tool call arguments joined); deltas of different parts stay apart,
    in order. The finish and usage are the last ones reported.
    """
    if len(chunks) == 1:
        return chunks[0]
    parts: list[content_pb2.Part] = []
    finish, usage, response_id = 0, None, ""
    for chunk in chunks:
        for part in chunk.parts:
            last = parts[-1] if parts else None
            kind = part.WhichOneof("data")
            if last is None or last.index != part.index or last.WhichOneof("data") != kind:
                parts.append(part)
            elif kind == "text":
                last.text += part.text
            elif kind == "reasoning":
                last.reasoning.text += part.reasoning.text
                last.reasoning.encrypted_content += part.reasoning.encrypted_content
            elif kind == "tool_call":
                last.tool_call.arguments += part.tool_call.arguments
            else:
                parts.append(part)
                continue
            if part.signature and last is not None and parts[-1] is last:
                last.signature = part.signature
        finish = chunk.finish or finish
        usage = chunk.usage if chunk.usage is not None else usage
        response_id = response_id or chunk.response_id
    return Chunk(parts=parts, finish=finish, usage=usage, response_id=response_id)


_EMPTY: tuple[content_pb2.Part, ...] = ()


def parts_of(message: content_pb2.Message) -> Sequence[content_pb2.Part]:
    """A message's parts, its `content` shorthand read as one text part."""
    if message.content:
        return (content_pb2.Part(text=message.content),)
    return message.parts or _EMPTY


def result_text(result: content_pb2.ToolResult) -> str:
    """A tool result's text: `content`, or its text parts joined (ToolResult.parts)."""
    if result.content or not result.parts:
        return result.content
    return "".join(p.text for p in result.parts if p.WhichOneof("data") == "text")


def result_images(result: content_pb2.ToolResult) -> list[content_pb2.Image]:
    return [p.image for p in result.parts if p.WhichOneof("data") == "image"]


__all__ = [
    "ALL_CAPABILITIES",
    "SHAPE_ERRORS",
    "Capability",
    "Chunk",
    "Part",
    "Provider",
    "ProviderRequest",
    "RemoteProvider",
    "Usage",
    "merge_chunks",
    "merged_batches",
    "parts_of",
    "result_images",
    "result_text",
    "retry_after_seconds",
]
