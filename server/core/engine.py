"""The generation core: validate -> route -> call -> shape, for any API adapter.

It knows nothing of gRPC or HTTP. An adapter (server/api/) turns its wire
request into an aigc.v1 request, gives the engine a `Call` (request id,
deadline, the observability record), and turns what comes back into its
wire response:

    answer = await engine.generate(request, call)       # unary: the stream folded
    async with engine.stream(request, call) as stream:  # streaming
        async for parts in stream: ...                  # part deltas with index
        stream.finish, stream.usage                     # after the last delta

Both raise AigcError (server/errors.py) for everything a caller should see;
a bug anywhere below becomes InternalError with the request id, its
traceback in the log. Leaving the `async with` early (the caller went away)
closes the upstream at once.

Order of checks: every field of the request - on its own, and against what
the chosen provider reserves and can translate - in one INVALID_ARGUMENT
(a bad request is INVALID_ARGUMENT whatever model it names); then the route
(MODEL_NOT_FOUND); then what the model can do (CAPABILITY_NOT_SUPPORTED);
then whether its provider is configured (FAILED_PRECONDITION).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, model_pb2
from server.core import retry, validation
from server.core.fold import Folder
from server.core.limits import Limits
from server.errors import (
    AigcError,
    InternalError,
    ModelNotFound,
    ProviderNotConfigured,
    UpstreamError,
    UpstreamFailure,
)
from server.providers.base import Chunk, ProviderRequest

if TYPE_CHECKING:
    from server.observability import RpcRecord
    from server.routing import ModelRoute, Router

log = logging.getLogger(__name__)

Request = aigc_service_pb2.ChatRequest | aigc_service_pb2.CompleteRequest


@dataclasses.dataclass(slots=True)
class Call:
    """Per-call context from the adapter."""

    request_id: str
    record: RpcRecord
    # Event-loop time by which the provider must give up (the caller's
    # deadline minus a margin, so the full error status still gets out).
    deadline: float | None = None


@dataclasses.dataclass(slots=True)
class Answer:
    """A whole answer (unary call)."""

    model: str
    provider: str
    response_id: str
    parts: list[content_pb2.Part]
    finish: int
    usage: generation_pb2.Usage | None

    def text(self) -> str:
        return "".join(part.text for part in self.parts if part.WhichOneof("data") == "text")


@dataclasses.dataclass(slots=True)
class _Prepared:
    route: ModelRoute
    request: ProviderRequest


class AnswerStream:
    """The deltas of a streamed answer; `finish`, `usage` once it ended."""

    def __init__(self, prepared: _Prepared, chunks: AsyncIterator[Chunk], call: Call) -> None:
        self.model = prepared.route.id
        self.provider = prepared.route.provider.name
        self._chunks = chunks
        self._call = call
        self._record = call.record
        self.finish = 0
        self.usage: generation_pb2.Usage | None = None
        self.response_id = ""

    def __aiter__(self) -> AnswerStream:
        return self

    async def __anext__(self) -> list[content_pb2.Part]:
        """The next non-empty list of part deltas; ends after the finish."""
        record = self._record
        while True:
            # No context manager here: this runs once per chunk, on the hot path.
            began = time.perf_counter()
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                record.upstream_ended(None, time.perf_counter() - began)
                if not self.finish:
                    raise UpstreamError(
                        UpstreamFailure.STREAM_INTERRUPTED,
                        "the stream ended without a finish reason",
                        provider=self.provider,
                    ) from None
                raise
            except AigcError as exc:
                record.upstream_ended(exc, time.perf_counter() - began)
                raise
            except Exception as exc:
                record.upstream_ended(exc, time.perf_counter() - began)
                raise _internal(self._call, exc) from exc
            except BaseException as exc:  # cancelled, or closed by the caller
                record.upstream_ended(exc, time.perf_counter() - began)
                raise
            record.chunk(chunk, time.perf_counter() - began)
            if chunk.response_id and not self.response_id:
                self.response_id = chunk.response_id
            if chunk.finish:
                self.finish = chunk.finish
            if chunk.usage is not None:
                self.usage = chunk.usage
            if chunk.parts:
                return chunk.parts


class Engine:
    def __init__(self, router: Router, limits: Limits | None = None) -> None:
        self.router = router
        self.limits = limits or Limits()

    async def generate(self, request: Request, call: Call) -> Answer:
        """The whole answer: the provider's stream folded (see providers/base.py for why)."""
        folder = Folder()
        async with self.stream(request, call) as stream:
            async for parts in stream:
                for part in parts:
                    folder._add_part(part)
        with _unexpected_errors(call):
            return Answer(
                model=stream.model,
                provider=stream.provider,
                response_id=stream.response_id or new_response_id(),
                parts=folder.parts(),
                finish=stream.finish,
                usage=stream.usage,
            )

    @contextlib.asynccontextmanager
    async def stream(self, request: Request, call: Call) -> AsyncIterator[AnswerStream]:
        with _unexpected_errors(call):
            prepared = self._prepare(request, call)
        record = call.record
        opened = retry.open_stream(prepared.route.provider, prepared.request, on_retry=record.retried)
        with _unexpected_errors(call), record.opening():
            chunks = await opened.__aenter__()
        try:
            yield AnswerStream(prepared, chunks, call)
        except BaseException as exc:
            if not await opened.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await opened.__aexit__(None, None, None)

    # --- preparation ------------------------------------------------------------------------------

    def _prepare(self, request: Request, call: Call) -> _Prepared:
        record = call.record
        record.requested(request.model, self._label(request.model))
        chat = isinstance(request, aigc_service_pb2.ChatRequest)
        violations = validation.Violations()
        if chat:
            params = validation.check_chat(request, self.limits, violations)
        else:
            params = validation.check_complete(request, self.limits, violations)
        try:
            route = self.router.resolve(request.model)
        except ModelNotFound:
            # A bad request is INVALID_ARGUMENT whatever model it names.
            violations.raise_if_any()
            raise
        record.routed(route.id, route.provider.name, route.upstream_model)
        provider = route.provider
        if chat:
            provider_request = ProviderRequest(
                upstream_model=route.upstream_model,
                chat=request,
                config=request.generation_config,
                user_id=request.user_id,
                vendor_params=params,
                deadline=call.deadline,
            )
        else:
            provider_request = self._completion(request, route, params, call)
        validation.check_vendor_params(params, provider.reserved_vendor_keys, violations)
        if not violations:  # provider checks may rely on a well-formed request
            for field, why in provider.validate(provider_request).items():
                violations.add(field, why)
        violations.raise_if_any()
        if chat:
            validation.check_capabilities(request, route.id, route.capabilities)
        if not provider.ready():
            raise ProviderNotConfigured(route.id, provider.name, provider.not_ready_hint())
        record.capture_prompt(request)
        return _Prepared(route, provider_request)

    def _completion(
        self, request: aigc_service_pb2.CompleteRequest, route: ModelRoute, params: dict, call: Call
    ) -> ProviderRequest:
        common = {
            "upstream_model": route.upstream_model,
            "config": request.generation_config,
            "user_id": request.user_id,
            "vendor_params": params,
            "deadline": call.deadline,
        }
        if model_pb2.CAPABILITY_RAW_COMPLETION in route.capabilities:
            return ProviderRequest(prompt=request.prompt, **common)
        # No raw completion at this vendor: the documented single user turn.
        chat = aigc_service_pb2.ChatRequest(
            model=request.model,
            messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content=request.prompt)],
            generation_config=request.generation_config,
            user_id=request.user_id,
        )
        return ProviderRequest(chat=chat, **common)

    def _label(self, model: str) -> str | None:
        """The configured id of `model`, if we serve it: a bounded metric label."""
        try:
            return self.router.resolve(model).id
        except ModelNotFound:
            return None


@contextlib.contextmanager
def _unexpected_errors(call: Call) -> Iterator[None]:
    """Turns a bug into INTERNAL with the request id; the traceback goes to the log."""
    try:
        yield
    except (AigcError, StopAsyncIteration):
        raise
    except Exception as exc:
        raise _internal(call, exc) from exc


def _internal(call: Call, exc: Exception) -> InternalError:
    log.error("unexpected error (request %s)", call.request_id, exc_info=exc)
    return InternalError(f"internal error; the server log has details under request id {call.request_id}")


def new_response_id() -> str:
    return f"resp-{uuid.uuid4().hex}"


__all__ = ["Answer", "AnswerStream", "Call", "Engine", "new_response_id"]
