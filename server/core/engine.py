"""The generation core: validate -> route -> call -> shape, for any API adapter.

It knows nothing of gRPC or HTTP. An adapter (server/api/) turns its wire
request into an aigc.v1 request, gives the engine a `Call` (request id,
deadline, the observability record), and turns what comes back into its
wire response:

    answer = await engine.generate(request, call)       # unary: the stream folded
    async with engine.stream(request, call) as stream:  # streaming
        async for parts in stream: ...                  # part deltas with index
        stream.finish, stream.usage                     # after the last delta
    vectors = await engine.embed(request, call)         # embeddings (core/embedding.py)

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

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from aigc.v1 import aigc_service_pb2, content_pb2, embedding_pb2, generation_pb2, model_pb2
from server.access.gate import Gate
from server.access.keys import CallerKey, KeyRing
from server.core import embedding, retry, validation
from server.core.fold import Folder
from server.core.limits import MAX_ANSWER_BYTES, Limits
from server.errors import (
    AigcError,
    AnswerTooLarge,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    ProviderNotConfigured,
    UpstreamError,
    UpstreamFailure,
)
from server.pricing import Price, PriceBook
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
    # The caller's key (None when authentication is off), from Gate.authenticate.
    key: CallerKey | None = None


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
    # Tokens reserved against the caller's quota until the real usage is known.
    reserve_tokens: int = 0


class AnswerStream:
    """The deltas of a streamed answer; `finish`, `usage` once it ended."""

    def __init__(
        self, prepared: _Prepared, chunks: AsyncIterator[Chunk], call: Call, price: Price | None = None
    ) -> None:
        self.model = prepared.route.id
        self.provider = prepared.route.provider.name
        # The price of the model that answers (a fallback's, if one took over).
        self._price = price
        self._chunks = chunks
        self._call = call
        self._record = call.record
        self.finish = 0
        self.usage: generation_pb2.Usage | None = None
        self.response_id = ""
        # Bytes of the parts received so far: the output estimate when no usage comes.
        self.output_bytes = 0

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
            if chunk.usage is not None and self._price is not None:
                # Before the record sees it: the call record and metrics carry the cost too.
                chunk.usage.cost.CopyFrom(self._price.cost(chunk.usage))
            record.chunk(chunk, time.perf_counter() - began)
            if chunk.response_id and not self.response_id:
                self.response_id = chunk.response_id
            if chunk.finish:
                self.finish = chunk.finish
            if chunk.usage is not None:
                self.usage = chunk.usage
            if chunk.parts:
                self.output_bytes += sum(part.ByteSize() for part in chunk.parts)
                return chunk.parts


class Engine:
    def __init__(
        self,
        router: Router,
        limits: Limits | None = None,
        gate: Gate | None = None,
        prices: PriceBook | None = None,
    ) -> None:
        self.router = router
        self.prices = prices or PriceBook.empty()
        self.limits = limits or Limits()
        self.gate = gate or Gate(KeyRing((), enabled=False), None, max_in_flight=1_000_000)

    async def generate(self, request: Request, call: Call) -> Answer:
        """The whole answer: the provider's stream folded (see providers/base.py for why)."""
        folder = Folder()
        size = 0
        async with self.stream(request, call) as stream:
            async for parts in stream:
                for part in parts:
                    # One rule for every surface: past the limit the answer could not be
                    # delivered whole everywhere (Envoy's transcoder buffers it), so it is
                    # refused here, and leaving the stream closes the vendor's at once.
                    size += part.ByteSize()
                    if size > MAX_ANSWER_BYTES:
                        raise AnswerTooLarge(MAX_ANSWER_BYTES)
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
            params = self._check(request, call)
            prepared = self._plan(request, self.router.resolve(request.model), params, call)
        record = call.record
        # Every generation call holds one of its key's max_concurrent_streams
        # while it runs, unary ones too: a unary call keeps the vendor as busy.
        ticket = await self.gate.admit(call.key, reserve_tokens=prepared.reserve_tokens, stream=True)
        used = 0  # nothing used if opening fails
        try:
            opened, chunks, prepared = await self._open(request, prepared, params, call)
            route = prepared.route
            price = self.prices.lookup(route.id, route.provider.name, route.upstream_model)
            answer = AnswerStream(prepared, chunks, call, price)
            try:
                yield answer
            except BaseException as exc:
                if not await opened.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                await opened.__aexit__(None, None, None)
            finally:
                used, estimated = tokens_used(prepared.request, answer)
                record.charged(used, estimated)
        finally:
            await ticket.release(used)

    async def _open(self, request: Request, prepared: _Prepared, params: dict, call: Call):
        """Opens the route's stream - retried - then, while nothing was sent, each fallback's."""
        record = call.record
        fallbacks = list(prepared.route.fallbacks)
        while True:
            opened = retry.open_stream(prepared.route.provider, prepared.request, on_retry=record.retried)
            try:
                with _unexpected_errors(call), record.opening():
                    chunks = await opened.__aenter__()
                return opened, chunks, prepared
            except UpstreamError as error:
                following = self._next_fallback(request, fallbacks, params, call, error)
                if following is None:
                    raise
                record.fell_back(prepared.route.label, following.route.label, error)
                prepared = following

    def _next_fallback(
        self, request: Request, names: list[str], params: dict, call: Call, error: UpstreamError
    ) -> _Prepared | None:
        """The next fallback route that can take this request, or None."""
        if error.failure not in _FALLBACK_FAILURES or _deadline_passed(call.deadline):
            return None
        while names:
            name = names.pop(0)
            try:
                route = self.router.resolve(name)
                return self._plan(request, route, params, call)
            except AigcError as skipped:  # cannot serve this request: the next one may
                log.info("fallback %s skipped: %s", name, skipped.reason, extra={"fallback": name})
        return None

    async def embed(self, request: embedding_pb2.EmbedRequest, call: Call) -> embedding.EmbedAnswer:
        """The vectors of `request`'s inputs, in order (see server/core/embedding.py).

        Checks in the order generation does: the request on its own, the route,
        the key's right to it, what the provider reserves, the capability, the
        provider's configuration; then the key's quotas."""
        record = call.record
        with _unexpected_errors(call):
            record.requested(request.model, self._label(request.model) if request.model else None)
            violations = validation.Violations()
            params = embedding.check_request(request, self.limits, violations)
            try:
                route = self.router.resolve(request.model) if request.model else self.router.default_embedding
            except ModelNotFound:
                violations.raise_if_any()
                raise
            if route is None:
                violations.raise_if_any()
                raise embedding.no_default_model()
            embedding.check_route(route, params, violations)
            violations.raise_if_any()
            self.gate.check_model(call.key, route, request.model)
            record.routed(route.id, route.provider.name, route.upstream_model, route.label)
            calls = embedding.batches(request, route, params, call.deadline)
            problems = route.provider.validate_embedding(calls[0])
            if problems:
                raise InvalidRequest(problems)
            embedding.check_model(route)
        ticket = await self.gate.admit(
            call.key, reserve_tokens=embedding.reserve_tokens(request), stream=False
        )
        spent = embedding.Spent()
        used: int | None = 0
        try:
            with _unexpected_errors(call):
                answer = await embedding.call_batches(route, calls, call, spent)
            record.usage = answer.usage
            # No count from the vendor (Gemini): the reservation stands as the charge.
            used = answer.usage.total_tokens if answer.usage is not None else None
            return answer
        except BaseException:
            used = spent.tokens  # what the batches before the failure used; 0 refunds it all
            raise
        finally:
            await ticket.release(used)

    # --- preparation ------------------------------------------------------------------------------

    def _check(self, request: Request, call: Call) -> dict:
        """The request on its own; returns its vendor_params. Raises INVALID_ARGUMENT or NOT_FOUND."""
        record = call.record
        record.requested(request.model, self._label(request.model))
        violations = validation.Violations()
        if isinstance(request, aigc_service_pb2.ChatRequest):
            params = validation.check_chat(request, self.limits, violations)
        else:
            params = validation.check_complete(request, self.limits, violations)
        try:
            route = self.router.resolve(request.model)
        except ModelNotFound:
            # A bad request is INVALID_ARGUMENT whatever model it names.
            violations.raise_if_any()
            raise
        self._route_violations(request, route, params, violations)
        violations.raise_if_any()
        record.capture_prompt(request)
        return params

    def _route_violations(
        self, request: Request, route: ModelRoute, params: dict, violations: validation.Violations
    ) -> None:
        validation.check_vendor_params(params, route.provider.reserved_vendor_keys, violations)
        cap = route.max_output_tokens
        config = request.generation_config
        if cap is not None and config.HasField("max_output_tokens") and config.max_output_tokens > cap:
            violations.add("generation_config.max_output_tokens", f"at most {cap} for model {route.id!r}")

    def _plan(self, request: Request, route: ModelRoute, params: dict, call: Call) -> _Prepared:
        """The provider request for `route`, after what the route decides: who may use it,
        what it can do, what its provider reserves, whether it is configured."""
        self.gate.check_model(call.key, route, request.model)
        call.record.routed(route.id, route.provider.name, route.upstream_model, route.label)
        if route.capabilities == _EMBEDDING_ONLY:
            # Known to embed and nothing else: refused here, not sent for the vendor to refuse.
            raise InvalidRequest({"model": f"{route.id!r} is an embedding model: it answers Embed, not chat"})
        chat = isinstance(request, aigc_service_pb2.ChatRequest)
        violations = validation.Violations()
        self._route_violations(request, route, params, violations)
        violations.raise_if_any()
        config = request.generation_config
        if route.max_output_tokens is not None and not config.HasField("max_output_tokens"):
            # The model's cap bounds an answer that names no limit, too.
            capped = generation_pb2.GenerationConfig()
            capped.CopyFrom(config)
            capped.max_output_tokens = route.max_output_tokens
            config = capped
        if chat:
            provider_request = ProviderRequest(
                upstream_model=route.upstream_model,
                chat=request,
                config=config,
                user_id=request.user_id,
                vendor_params=params,
                deadline=call.deadline,
            )
        else:
            provider_request = self._completion(request, route, config, params, call)
        provider = route.provider
        problems = provider.validate(provider_request)
        if problems:
            raise InvalidRequest(problems)
        if chat:
            validation.check_capabilities(request, route.id, route.capabilities)
        if not provider.ready():
            raise ProviderNotConfigured(route.id, provider.name, provider.not_ready_hint())
        reserve = (
            config.max_output_tokens if config.HasField("max_output_tokens") else DEFAULT_RESERVED_TOKENS
        )
        return _Prepared(route, provider_request, reserve)

    def _completion(
        self,
        request: aigc_service_pb2.CompleteRequest,
        route: ModelRoute,
        config: generation_pb2.GenerationConfig,
        params: dict,
        call: Call,
    ) -> ProviderRequest:
        common = {
            "upstream_model": route.upstream_model,
            "config": config,
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
            generation_config=config,
            user_id=request.user_id,
        )
        return ProviderRequest(chat=chat, **common)

    def _label(self, model: str) -> str | None:
        """The configured id of `model`, if we serve it: a bounded metric label."""
        try:
            return self.router.resolve(model).label
        except (ModelNotFound, InvalidRequest):
            return None


# Failures another model may not have: worth a fallback (a bad request is
# bad everywhere, a policy refusal or an over-long prompt too).
_FALLBACK_FAILURES = frozenset(
    {
        UpstreamFailure.RATE_LIMITED,
        UpstreamFailure.SERVER_ERROR,
        UpstreamFailure.UNREACHABLE,
        UpstreamFailure.STREAM_INTERRUPTED,
        UpstreamFailure.TIMEOUT,
        UpstreamFailure.AUTHENTICATION,
        UpstreamFailure.MODEL_NOT_FOUND,
        UpstreamFailure.MALFORMED_RESPONSE,
    }
)
# The capabilities of a model that only embeds (the embedding presets, the built-in one).
_EMBEDDING_ONLY = frozenset({model_pb2.CAPABILITY_EMBEDDINGS})
# Tokens a request that names no max_output_tokens reserves against its key's
# tokens_per_minute until its real usage is known.
DEFAULT_RESERVED_TOKENS = 1024


# What a call without reported usage is charged per byte: one token per
# BYTES_PER_ESTIMATED_TOKEN bytes of its request and of the output it
# received, rounded up. Vendors report usage in a stream's last chunk, so a
# stream cancelled (or cut) before its end never gets it, yet the vendor bills
# its prompt and the output it made; charging only the output reservation let
# cancelled streams spend a tokens_per_minute quota many times over. 3 bytes a
# token is more than the ~4 bytes of English text per token of the common
# tokenizers, so the estimate errs on the caller's side of the quota for most
# text; CJK text (3 bytes a character, about a token each) comes out about right.
BYTES_PER_ESTIMATED_TOKEN = 3


def estimated_tokens(size: int) -> int:
    return -(-max(0, size) // BYTES_PER_ESTIMATED_TOKEN)


def tokens_used(request: ProviderRequest, answer: AnswerStream) -> tuple[int, bool]:
    """The tokens to charge for `answer`, and whether they are an estimate.

    The vendor's usage when it reported it; else the estimate above of the
    prompt (or the prompt tokens, if the vendor reported those early, as
    Anthropic does at the start) plus the output received so far (or the
    output tokens reported, if more).
    """
    usage = answer.usage
    if usage is not None and usage.total_tokens and answer.finish:
        return usage.total_tokens, False
    if usage is not None and usage.prompt_tokens:
        prompt = usage.prompt_tokens
    elif request.chat is not None:
        prompt = estimated_tokens(request.chat.ByteSize())
    else:
        prompt = estimated_tokens(len((request.prompt or "").encode()))
    output = estimated_tokens(answer.output_bytes)
    if usage is not None:
        output = max(output, usage.completion_tokens)
    return prompt + output, True


def _deadline_passed(deadline: float | None) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() >= deadline


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
