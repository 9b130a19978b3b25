"""The per-RPC record: what the service reports once per call, to logs, metrics and traces.

The service opens an `RpcRecord` around each RPC (`with record:`), tells it
the route, times the provider's stream (`opening`, `chunk`, `upstream_ended`), and
hands it the error it aborts with. When the block exits - normally, by
abort, or because the caller went away (CancelledError, or GeneratorExit when
a streaming handler is closed) - the record writes exactly one access line,
updates the metrics, and ends the spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol

from google.protobuf import json_format
from google.rpc import code_pb2

from aigc.v1 import aigc_service_pb2, generation_pb2
from server.errors import AigcError, UpstreamError
from server.observability.logs import request_id_var
from server.observability.metrics import Metrics
from server.observability.settings import ObservabilitySettings
from server.observability.tracing import NoTracing, Span, Tracing
from server.providers.base import Chunk, Usage

access_log = logging.getLogger("aigc.access")

SERVICE = "aigc.v1.AigcService"
# gen_ai.operation.name per RPC; ListModels is not a generation.
_OPERATIONS = {
    "Chat": "chat",
    "StreamChat": "chat",
    "Complete": "text_completion",
    "StreamComplete": "text_completion",
    "Embed": "embeddings",
}
# Codes that make a SERVER span an error (OpenTelemetry gRPC conventions):
# the others are the caller's doing.
_SERVER_FAULTS = frozenset(
    {
        code_pb2.UNKNOWN,
        code_pb2.DEADLINE_EXCEEDED,
        code_pb2.UNIMPLEMENTED,
        code_pb2.INTERNAL,
        code_pb2.UNAVAILABLE,
        code_pb2.DATA_LOSS,
    }
)
_ERROR_LEVEL_CODES = frozenset({code_pb2.UNKNOWN, code_pb2.INTERNAL, code_pb2.DATA_LOSS})
# FinishReason values as logged and traced: FINISH_REASON_TOOL_CALLS -> "tool_calls".
_FINISH_NAMES = {
    value: name.removeprefix("FINISH_REASON_").lower()
    for name, value in generation_pb2.FinishReason.items()
    if value
}
UNKNOWN_MODEL = "unknown"
# How a call reached the server: gRPC directly (or through Envoy as gRPC),
# REST (JSON over HTTP that Envoy's transcoder made gRPC), or the
# OpenAI-compatible door (its Responses door too), or the Anthropic Messages door.
Surface = Literal["grpc", "rest", "openai", "anthropic"]
# The doors: aiohttp, not gRPC, so their spans are HTTP spans.
HTTP_SURFACES = frozenset({"openai", "anthropic"})


class CallSink(Protocol):
    """Takes one row per finished call (server/store/recorder.py CallRecorder)."""

    def add(self, row: dict[str, Any]) -> None: ...


_MAX_LOGGED_MODEL_CHARS = 128


class Observability:
    """Where the service reports: settings, one metrics registry, one tracer."""

    def __init__(
        self,
        settings: ObservabilitySettings | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings or ObservabilitySettings()
        self.metrics = metrics or Metrics()
        self.tracing = tracing or NoTracing()
        # Where each finished generation call's record goes (server/store/recorder.py), if anywhere.
        self.recorder: CallSink | None = None

    def rpc(
        self,
        method: str,
        request_id: str,
        *,
        streaming: bool,
        surface: Surface = "grpc",
        peer: str = "",
        time_remaining: float | None = None,
        metadata: Sequence[tuple[str, Any]] = (),
        http_route: str = "",
        http_method: str = "",
    ) -> RpcRecord:
        """A record for one call. The adapter says what it knows of the call:
        whether its answer is streamed, the `surface` it came through (Surface),
        and reads `peer`, `time_remaining` and `metadata` from its transport at
        the start of the call; the OpenAI door also names its `http_method` and `http_route`."""
        return RpcRecord(
            self,
            method,
            request_id,
            peer,
            time_remaining,
            metadata,
            surface,
            streaming,
            (http_method, http_route),
        )


class RpcRecord:
    def __init__(
        self,
        owner: Observability,
        method: str,
        request_id: str,
        peer: str,
        time_remaining: float | None,
        metadata: Sequence[tuple[str, Any]],
        surface: Surface = "grpc",
        streaming: bool = False,
        http: tuple[str, str] = ("", ""),
    ) -> None:
        self._owner = owner
        self.method = method
        self.surface = surface
        self.request_id = request_id
        # A fact the adapter states (never guessed from a method name).
        self.streaming = streaming
        self.operation = _OPERATIONS.get(method, "")
        self.started = time.perf_counter()
        # Read from the context now, never at the end: context.peer() on an RPC
        # that its deadline cancelled segfaulted the server (grpcio 1.85.1,
        # seen in ~1 of 2 runs of 8 such RPCs; the regression test is
        # test_stream_past_its_deadline_is_logged_as_deadline_exceeded).
        self.peer = peer
        remaining = time_remaining
        self._deadline = None if remaining is None else self.started + remaining
        # What the caller asked for (logged), and the bounded metric label.
        self.model = ""
        self.model_label = UNKNOWN_MODEL if self.operation else ""
        self.provider = ""
        self.upstream_model = ""
        self.error: AigcError | None = None
        self.code: int | None = None  # a google.rpc.Code value
        self.cancelled = False
        self.ttft: float | None = None
        self.upstream_seconds = 0.0
        self.upstream_calls = 0
        self.usage: Usage | None = None
        self.finish = 0  # an aigc.v1.FinishReason value
        self.retries = 0
        self.fallbacks: list[str] = []
        self.key_name: str | None = None
        # Tokens charged to the key (the usage, or an estimate: server/core/engine.py).
        self.charged_tokens: int | None = None
        self.tokens_estimated = False
        self.response_id = ""
        self.prompt: Any = None
        self._answer: list[str] | None = [] if owner.settings.log_prompts else None
        self._in_flight: tuple[str, str, str] | None = None
        self._client_span: Span | None = None
        self._done = False
        self._token: Any = None
        if surface in HTTP_SURFACES:
            # An HTTP server span (OpenTelemetry HTTP conventions): the doors are not gRPC.
            http_method, http_route = http
            name, attributes = (
                f"{http_method} {http_route}".strip() or method,
                {"http.request.method": http_method or None, "http.route": http_route or None},
            )
        else:
            # gRPC, or REST that Envoy transcoded to gRPC: this server speaks gRPC either way.
            name, attributes = (
                f"{SERVICE}/{method}",
                {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method},
            )
        self.span = owner.tracing.server_span(
            name,
            metadata,
            {
                **{key: value for key, value in attributes.items() if value is not None},
                "aigc.surface": surface,
                "aigc.streaming": streaming,
                "aigc.request_id": request_id,
            },
        )

    # --- the RPC's extent -------------------------------------------------------

    def __enter__(self) -> RpcRecord:
        self._token = request_id_var.set(self.request_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._done:
                pass  # reported by `failed`, before the abort
            elif exc is None:
                self.code = code_pb2.OK
            elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
                # The caller cancelled, hung up, or its deadline passed.
                self.cancelled = True
                expired = self._deadline is not None and time.perf_counter() >= self._deadline
                self.code = code_pb2.DEADLINE_EXCEEDED if expired else code_pb2.CANCELLED
            else:
                self.code = code_pb2.UNKNOWN  # grpc reports an unhandled exception so
            self._finish(exc if self.code == code_pb2.UNKNOWN else None)
        finally:
            try:
                request_id_var.reset(self._token)
            except ValueError:  # exited in another context (a generator closed by the GC)
                pass

    # --- what the service tells us ----------------------------------------------

    def requested(self, model: str, label: str | None) -> None:
        """The `model` the request named, and its configured id if we serve it."""
        self.model = model[:_MAX_LOGGED_MODEL_CHARS]
        if label:
            self.model_label = label

    def routed(self, model_id: str, provider: str, upstream_model: str, label: str | None = None) -> None:
        """The route chosen: `label` is its bounded metric label (default: `model_id`)."""
        self.model = model_id
        self.model_label = label or model_id
        self.provider = provider
        self.upstream_model = upstream_model
        if self.streaming and self._in_flight is None:
            self._in_flight = (self.method, self.model_label, provider, self.surface)
            m = self._owner.metrics
            m.child(m.streams_in_flight, *self._in_flight).inc()

    def capture_prompt(
        self, request: aigc_service_pb2.ChatRequest | aigc_service_pb2.CompleteRequest
    ) -> None:
        """Keeps the prompt for the access line, when AIGC_LOG_PROMPTS is on."""
        if not self._owner.settings.log_prompts:
            return
        if isinstance(request, aigc_service_pb2.ChatRequest):
            self.prompt = [
                json_format.MessageToDict(m, preserving_proto_field_name=True) for m in request.messages
            ]
        else:
            self.prompt = request.prompt

    def failed(self, error: AigcError) -> None:
        """The RPC ends with `error`: reported now, right before the abort, so
        that by the time the caller sees the error, the metrics and the
        access line already count it (a caller may scrape at once)."""
        self.error = error
        self.code = error.code
        self._finish(None)

    def charged(self, tokens: int, estimated: bool) -> None:
        """The tokens charged to the caller's key; `estimated` when the vendor reported no usage."""
        self.charged_tokens = tokens
        self.tokens_estimated = estimated

    def authenticated(self, key_name: str | None) -> None:
        """The caller's key, by name (never the key itself)."""
        self.key_name = key_name

    def fell_back(self, from_model: str, to_model: str, error: AigcError) -> None:
        """`from_model` failed before answering; `to_model` is tried instead."""
        self.fallbacks.append(to_model)
        self._owner.metrics.fallbacks.labels(from_model, to_model, error.reason).inc()
        access_log.info(
            "%s fallback %s -> %s after %s",
            self.method,
            from_model,
            to_model,
            error.reason,
            extra={"from_model": from_model, "to_model": to_model, "error_reason": error.reason},
        )

    def retried(self, error: AigcError, attempt: int, delay: float) -> None:
        """An attempt failed before any output and is tried again after `delay` seconds."""
        self.retries = attempt
        self._owner.metrics.retries.labels(self.provider, error.reason).inc()
        access_log.info(
            "%s retry %d after %s in %.2fs",
            self.method,
            attempt,
            error.reason,
            delay,
            extra={"retry": attempt, "error_reason": error.reason, "delay_ms": _ms(delay)},
        )

    @contextlib.contextmanager
    def opening(self) -> Iterator[None]:
        """Times opening the provider's stream (retries and the wait for its
        first chunk included) as time in the provider, and starts its span."""
        self._start_client()
        began = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._end_client(exc)
            raise
        finally:
            self.upstream_seconds += time.perf_counter() - began

    def chunk(self, chunk: Chunk, seconds: float) -> None:
        """The provider's stream gave `chunk` after `seconds` of waiting for it."""
        self.upstream_seconds += seconds
        self._observe_chunk(chunk)

    def upstream_ended(self, exc: BaseException | None, seconds: float) -> None:
        """The provider's stream ended (exc None) or failed after `seconds` of waiting."""
        self.upstream_seconds += seconds
        self._end_client(exc)

    # --- internals ----------------------------------------------------------------

    def _first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    def _observe_chunk(self, chunk: Chunk) -> None:
        if chunk.parts:
            self._first_token()
            if self._answer is not None:
                self._answer.extend(p.text for p in chunk.parts if p.WhichOneof("data") == "text")
        self.finish = chunk.finish or self.finish
        self.usage = chunk.usage or self.usage
        self.response_id = self.response_id or chunk.response_id

    def _start_client(self) -> None:
        self.upstream_calls += 1
        self._client_span = self._owner.tracing.client_span(
            self.span,
            f"{self.operation} {self.upstream_model}".strip(),
            {
                "gen_ai.operation.name": self.operation,
                "gen_ai.provider.name": self.provider,
                "gen_ai.request.model": self.upstream_model,
            },
        )

    def _end_client(self, exc: BaseException | None) -> None:
        span, self._client_span = self._client_span, None
        if span is None:
            return
        span.set_attributes(self._gen_ai_result_attributes())
        if isinstance(exc, UpstreamError):
            span.set_error(exc.failure.value, exc.message)
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            span.set_attributes({"aigc.cancelled": True})
        elif exc is not None:
            span.set_error(type(exc).__qualname__, str(exc))
        span.end()

    def _gen_ai_result_attributes(self) -> dict[str, Any]:
        return {
            "gen_ai.usage.input_tokens": self.usage.prompt_tokens if self.usage else None,
            "gen_ai.usage.output_tokens": self.usage.completion_tokens if self.usage else None,
            "gen_ai.response.id": self.response_id or None,
            "gen_ai.response.finish_reasons": [_FINISH_NAMES[self.finish]] if self.finish else None,
        }

    def _finish(self, unhandled: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        assert self.code is not None
        elapsed = time.perf_counter() - self.started
        self._end_client(asyncio.CancelledError() if self.cancelled else None)
        self._record_metrics(elapsed)
        self._end_span()
        self._write_access_line(elapsed, unhandled)
        if self._owner.recorder is not None and self.operation:
            self._owner.recorder.add(self._call_row(elapsed, unhandled))

    def _call_row(self, elapsed: float, unhandled: BaseException | None) -> dict[str, Any]:
        """The call's row for the store (server/store/schema.py `calls`): never prompt or answer text.
        Strings are cut to their columns' sizes, so one odd value cannot make a batch fail."""
        usage = self.usage
        details = usage is not None
        cost = usage.cost if details and usage.HasField("cost") else None
        reason = self.error.reason if self.error is not None else None
        if reason is None and unhandled is not None:
            reason = "UNHANDLED_EXCEPTION"
        return {
            "request_id": self.request_id[:128],
            "time": time.time() - elapsed,  # epoch seconds; the recorder converts it off the hot path
            "key_name": self.key_name[:128] if self.key_name is not None else None,
            "model": self.model[:256],
            "provider": self.provider[:128],
            "surface": self.surface[:16],
            "method": self.method[:32],
            "status": code_pb2.Code.Name(self.code),
            "reason": reason[:64] if reason else None,
            "prompt_tokens": usage.prompt_tokens if details else None,
            "completion_tokens": usage.completion_tokens if details else None,
            "reasoning_tokens": usage.reasoning_tokens
            if details and usage.HasField("reasoning_tokens")
            else None,
            "cached_prompt_tokens": (
                usage.cached_prompt_tokens if details and usage.HasField("cached_prompt_tokens") else None
            ),
            "cache_write_prompt_tokens": (
                usage.cache_write_prompt_tokens
                if details and usage.HasField("cache_write_prompt_tokens")
                else None
            ),
            "cost_nanos": cost.units * 1_000_000_000 + cost.nanos if cost is not None else None,
            "currency": cost.currency_code[:3] if cost is not None else None,
            "latency_ms": round(elapsed * 1000, 3),
            "ttft_ms": round(self.ttft * 1000, 3) if self.ttft is not None else None,
            "retries": self.retries,
            "fallbacks": ",".join(self.fallbacks)[:1024],
            "cancelled": self.cancelled,
        }

    def _record_metrics(self, elapsed: float) -> None:
        m = self._owner.metrics
        rpc_labels = (self.method, self.model_label, self.provider)
        m.child(m.requests, *rpc_labels, self.surface, code_pb2.Code.Name(self.code)).inc()
        m.child(m.duration, *rpc_labels, self.surface).observe(elapsed)
        if self._in_flight is not None:
            m.child(m.streams_in_flight, *self._in_flight).dec()
            self._in_flight = None
        if self.upstream_calls:
            m.child(m.overhead, *rpc_labels).observe(max(0.0, elapsed - self.upstream_seconds))
        gen_ai = (self.operation, self.provider, self.model_label)
        if self.ttft is not None:
            m.child(m.ttft, *gen_ai).observe(self.ttft)
        if self.usage is not None:
            m.child(m.tokens, *gen_ai, "input").observe(self.usage.prompt_tokens)
            m.child(m.tokens, *gen_ai, "output").observe(self.usage.completion_tokens)
        if isinstance(self.error, UpstreamError):
            m.upstream_errors.labels(self.provider, self.model_label, self.error.reason).inc()
        if self.usage is not None and self.usage.HasField("cost"):
            cost = self.usage.cost
            m.spend.labels(self.key_name or "", self.model_label, cost.currency_code).inc(
                cost.units + cost.nanos / 1e9
            )
        if self.key_name is not None:
            m.caller_requests.labels(self.key_name, code_pb2.Code.Name(self.code)).inc()
            if self.charged_tokens is not None:
                m.caller_tokens.labels(self.key_name).inc(self.charged_tokens)
            elif self.usage is not None:
                m.caller_tokens.labels(self.key_name).inc(self.usage.total_tokens)

    def _end_span(self) -> None:
        self.span.set_attributes(
            {
                # The door's span is HTTP: its outcome is the gRPC code's name, no rpc.* attribute.
                "rpc.grpc.status_code": self.code if self.surface not in HTTP_SURFACES else None,
                "aigc.code": code_pb2.Code.Name(self.code),
                "gen_ai.operation.name": self.operation or None,
                "gen_ai.request.model": self.model_label if self.operation else None,
                "gen_ai.provider.name": self.provider or None,
                "aigc.cancelled": self.cancelled,
                **self._gen_ai_result_attributes(),
            }
        )
        if self.error is not None:
            self.span.set_attributes({"aigc.error.reason": self.error.reason})
        if self.code in _SERVER_FAULTS:
            name = code_pb2.Code.Name(self.code)
            reason = self.error.reason if self.error else name
            self.span.set_error(reason, self.error.message if self.error else name)
        self.span.end()

    def _write_access_line(self, elapsed: float, unhandled: BaseException | None) -> None:
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "surface": self.surface,
            "model": self.model,
            "provider": self.provider,
            "code": code_pb2.Code.Name(self.code),
            "latency_ms": _ms(elapsed),
            "ttft_ms": _ms(self.ttft),
            "upstream_ms": _ms(self.upstream_seconds) if self.upstream_calls else None,
            "prompt_tokens": self.usage.prompt_tokens if self.usage else None,
            "completion_tokens": self.usage.completion_tokens if self.usage else None,
            "finish_reason": _FINISH_NAMES.get(self.finish) if self.finish else None,
            "retries": self.retries or None,
            "fallbacks": self.fallbacks or None,
            "key": self.key_name,
            "estimated_tokens": self.charged_tokens if self.tokens_estimated else None,
            "response_id": self.response_id or None,
            "cancelled": self.cancelled,
            "peer": self.peer,
        }
        if self.error is not None:
            line["error_reason"] = self.error.reason
            line["error_message"] = self.error.message
        elif unhandled is not None:
            line["error_reason"] = "UNHANDLED_EXCEPTION"
            line["error_message"] = f"{type(unhandled).__qualname__}: {unhandled}"
        if self.span.trace_id:
            line["trace_id"] = self.span.trace_id
        if self._answer is not None:
            line["prompt"] = self.prompt
            line["answer"] = "".join(self._answer)
        if self.code in _ERROR_LEVEL_CODES:
            level = logging.ERROR
        elif self.code in (code_pb2.OK, code_pb2.CANCELLED):
            level = logging.INFO
        else:
            level = logging.WARNING
        access_log.log(
            level, "%s %s %.1fms", self.method, code_pb2.Code.Name(self.code), elapsed * 1000, extra=line
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
