"""The provider interface: what every vendor module implements.

Providers see plain Python types, never protobuf: the service layer turns
requests into a `GenerateRequest` and the provider's `Generation` / `Chunk`s
back into the one response shape. A provider raises only `UpstreamError`
(see server/errors.py) for vendor failures; anything else is a bug.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


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

    @abc.abstractmethod
    async def generate(self, request: GenerateRequest) -> Generation:
        """Returns the whole answer."""

    @abc.abstractmethod
    def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        """Yields the answer as it is generated.

        Must free upstream resources (close the HTTP response) when the
        consumer stops early: the service closes this iterator when the
        caller cancels, and the vendor must stop generating.
        """
