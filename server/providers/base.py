"""The provider interface: what every vendor module implements.

Providers see plain Python types, never protobuf: the service layer turns
requests into a `GenerateRequest` and the provider's `Generation` / `Chunk`s
back into the one response shape. A provider raises only `UpstreamError`
(see server/errors.py) for vendor failures; anything else is a bug.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import email.utils
import enum
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, Literal, TypeVar

from server.errors import UpstreamError, UpstreamFailure

_T = TypeVar("_T")

Role = Literal["system", "user", "assistant"]

# Header values this long are treated as secrets (see RemoteProvider.secrets).
_MIN_SECRET_HEADER = 8


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Generation controls; None leaves the choice to the vendor's default."""

    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    """One generation: a chat (`messages`) or a text completion (`prompt`)."""

    # The model's name at the vendor.
    upstream_model: str
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    sampling: Sampling = Sampling()
    user_id: str = ""
    # Passed to the vendor as is, merged into its request body.
    vendor_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Seconds left of the caller's deadline; None when the caller set none.
    timeout: float | None = None


class Finish(enum.Enum):
    STOP = "stop"
    MAX_TOKENS = "max_tokens"
    CONTENT_FILTER = "content_filter"
    OTHER = "other"


@dataclasses.dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclasses.dataclass(frozen=True)
class Generation:
    """A whole answer (unary call)."""

    text: str
    finish: Finish
    usage: Usage | None
    response_id: str = ""


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One piece of a streamed answer.

    Text comes in order; `finish` and `usage` each arrive once, on the last
    chunks (vendors send them separately, e.g. OpenAI's usage-only chunk).
    """

    text: str = ""
    finish: Finish | None = None
    usage: Usage | None = None
    response_id: str = ""


class Provider(abc.ABC):
    """A vendor behind one interface. One instance serves many models."""

    #: The provider's name in responses and ListModels, e.g. "local", "openai".
    name: str

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

    async def generate(self, request: GenerateRequest) -> Generation:
        """Returns the whole answer: the provider's own stream folded.

        Every provider here uses this (none overrides it). Why not the vendor's
        unary endpoint: when the caller goes away (cancel, deadline) we close
        the upstream connection, and only a *stream* is reliably stopped by
        that - llama.cpp, for one, finishes a unary request for nobody.
        Folding also gives unary and streaming identical response processing
        and identical errors: a failure before the first byte (e.g. a 429 with
        Retry-After) is raised by the stream as it would be by a unary call.
        `usage` is the last the stream reported, None if it reported none.
        Override only for a vendor without streaming.
        """
        text: list[str] = []
        finish: Finish | None = None
        usage: Usage | None = None
        response_id = ""
        stream = self.stream(request)
        try:
            async for chunk in stream:
                text.append(chunk.text)
                finish = chunk.finish or finish
                usage = chunk.usage or usage
                response_id = response_id or chunk.response_id
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if finish is None:
            raise UpstreamError(
                UpstreamFailure.STREAM_INTERRUPTED,
                "the stream ended without a finish reason",
                provider=self.name,
            )
        return Generation(text="".join(text), finish=finish, usage=usage, response_id=response_id)

    @abc.abstractmethod
    def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        """Yields the answer as it is generated.

        Must free upstream resources (close the HTTP response) when the
        consumer stops early: the service closes this iterator when the
        caller cancels, and the vendor must stop generating.
        """


ClientT = TypeVar("ClientT")


class RemoteProvider(Provider, Generic[ClientT]):
    """A vendor reached over HTTP with an API key.

    Every remote provider (openai_compat, anthropic, gemini) takes exactly this
    constructor, so configuration code can build any of them the same way.
    `max_retries` is the one retry layer for the provider (the vendor SDK's, or
    the module's own where it has no SDK); `timeout_seconds` bounds each HTTP
    operation (connect, each read) and a caller's deadline
    (`GenerateRequest.timeout`) bounds the whole call on top of it.
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
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.requires_key = requires_key
        self.max_retries = max_retries
        self.timeout_seconds = timeout_seconds
        self.default_headers = dict(default_headers or {})

    _client: ClientT | None = None

    @abc.abstractmethod
    def _new_client(self) -> ClientT:
        """Builds the vendor client: one per provider, reused by every request."""

    async def _close_client(self, client: ClientT) -> None:
        await client.close()  # type: ignore[attr-defined]

    @property
    def client(self) -> ClientT:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    async def start(self) -> None:
        # Built now, not on the first request, so a bad base URL or header
        # stops the server at start-up.
        _ = self.client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._close_client(client)

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
        return ((self.api_key,) if self.api_key else ()) + headers

    def request_timeout(self, request: GenerateRequest) -> float:
        """Per-operation HTTP timeout for `request`: never beyond the caller's deadline."""
        if request.timeout is None:
            return self.timeout_seconds
        return max(0.001, min(self.timeout_seconds, request.timeout))


def deadline_for(request: GenerateRequest) -> float | None:
    """The event-loop time by which the caller's deadline passes, if it set one."""
    if request.timeout is None:
        return None
    return asyncio.get_running_loop().time() + request.timeout


async def next_before(iterator: AsyncIterator[_T], deadline: float | None) -> _T:
    """`anext(iterator)`, raising TimeoutError once `deadline` (loop time) passes.

    Used per item rather than around a whole `async for`, so no timeout scope
    spans a `yield` of the provider's own generator.
    """
    if deadline is None:
        return await anext(iterator)
    async with asyncio.timeout_at(deadline):
        return await anext(iterator)


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """True when a response says it is server-sent events.

    Asked only of a stream that ended without its end marker: a 200 that is
    not SSE at all (a proxy's HTML page, a server ignoring `stream`) is
    MALFORMED_RESPONSE, not a stream cut short.
    """
    return headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


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
