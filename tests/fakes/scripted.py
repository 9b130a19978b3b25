"""A provider that implements the real interface and plays a script: for tests of the core.

Each attempt (one `stream()` scope) plays the next script: chunks in order,
an exception instance raised where it stands. It records every request and
whether each scope was closed, so a test can prove the core left it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from aigc.v1 import content_pb2, generation_pb2
from server.providers.base import Chunk, Provider, ProviderRequest


class OnRead:
    """A failure on the first read of the stream, after it opened (e.g. a 200, then a cut)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


Step = Chunk | BaseException | OnRead


def text(text: str, index: int = 0) -> Chunk:
    return Chunk(parts=[content_pb2.Part(index=index, text=text)], response_id="r-1")


def finish(prompt: int = 3, completion: int = 2) -> Chunk:
    return Chunk(
        finish=generation_pb2.FINISH_REASON_STOP,
        usage=generation_pb2.Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        ),
    )


class ScriptedProvider(Provider):
    def __init__(self, *scripts: Sequence[Step], name: str = "scripted", max_retries: int = 0) -> None:
        self.name = name
        self.max_retries = max_retries
        self._scripts = list(scripts)
        self.requests: list[ProviderRequest] = []
        self.closed = 0

    @contextlib.asynccontextmanager
    async def stream(self, request: ProviderRequest) -> AsyncIterator[AsyncIterator[Chunk]]:
        self.requests.append(request)
        script = self._scripts.pop(0)
        try:
            if script and isinstance(script[0], BaseException):
                raise script[0]  # fails while opening, like a 429 before any body
            yield self._play(script)
        finally:
            self.closed += 1

    async def _play(self, script: Sequence[Step]) -> AsyncIterator[Chunk]:
        for step in script:
            if isinstance(step, OnRead):
                raise step.error
            if isinstance(step, BaseException):
                raise step
            yield step
