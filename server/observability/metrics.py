"""Prometheus metrics, one CollectorRegistry per server (tests run many).

Names follow the OpenTelemetry GenAI semantic conventions where one exists,
translated Prometheus-style (dots to underscores, unit suffix), with the
semconv attribute names as labels; the rest are `aigc_*`:

    aigc_requests_total{method,model,provider,surface,code}        counter
    aigc_request_duration_seconds{method,model,provider,surface}   histogram, the whole RPC
    aigc_streams_in_flight{method,model,provider,surface}          gauge
    aigc_upstream_errors_total{provider,model,reason}      counter, reason = the ErrorInfo reason
    aigc_overhead_seconds{method,model,provider}           histogram, RPC time minus time in the provider
    gen_ai_server_time_to_first_token_seconds{GEN_AI}      histogram
    gen_ai_client_token_usage{GEN_AI,gen_ai_token_type}    histogram of tokens per request (input|output)
    aigc_upstream_retries_total{provider,reason}           counter, retries before the first chunk
    aigc_fallbacks_total{from_model,to_model,reason}       counter, switches to a fallback model
    aigc_caller_requests_total{key,code}                   counter per caller key name (auth on)
    aigc_caller_tokens_total{key}                          counter of tokens charged per caller key name
    aigc_spend_total{key,model,currency}                   counter of what calls cost (server/pricing/),
                                                           in units of the currency; key "" with auth off

    GEN_AI = gen_ai_operation_name (chat|text_completion), gen_ai_provider_name, gen_ai_request_model

Labels stay bounded: `model` is a configured model id ("unknown" when the
request named none we serve), `provider` a configured provider name,
`surface` how the call came (grpc, rest - JSON that Envoy transcoded -, or
openai - the OpenAI-compatible door).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from server.envvars import split_host_port

log = logging.getLogger(__name__)

_RPC_LABELS = ("method", "model", "provider")
_GEN_AI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
# Buckets the GenAI semconv recommends for these two instruments.
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aigc_requests",
            "RPCs served, by surface and final gRPC status code.",
            (*_RPC_LABELS, "surface", "code"),
            registry=r,
        )
        self.duration = Histogram(
            "aigc_request_duration_seconds",
            "Whole RPC time, from the request to the last message or the error.",
            (*_RPC_LABELS, "surface"),
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from the request to the first generated text (streams: first message; unary: the answer).",
            _GEN_AI_LABELS,
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request as the provider reported them, by gen_ai_token_type (input, output).",
            (*_GEN_AI_LABELS, "gen_ai_token_type"),
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.streams_in_flight = Gauge(
            "aigc_streams_in_flight",
            "Streaming RPCs being served now.",
            (*_RPC_LABELS, "surface"),
            registry=r,
            # Under a supervisor: the sum over the workers that are alive.
            multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "aigc_upstream_errors",
            "Provider failures, by the reason callers see in ErrorInfo.",
            ("provider", "model", "reason"),
            registry=r,
        )
        self.retries = Counter(
            "aigc_upstream_retries",
            "Attempts retried before the first chunk, by provider and the reason of the failure.",
            ("provider", "reason"),
            registry=r,
        )
        self.fallbacks = Counter(
            "aigc_fallbacks",
            "Calls switched to a fallback model before answering.",
            ("from_model", "to_model", "reason"),
            registry=r,
        )
        self.caller_requests = Counter(
            "aigc_caller_requests",
            "RPCs by caller key name (authentication on) and final code.",
            ("key", "code"),
            registry=r,
        )
        self.caller_tokens = Counter(
            "aigc_caller_tokens",
            "Tokens charged per caller key name: prompt + completion as reported, or the "
            "estimate for a call without reported usage (a cancelled stream).",
            ("key",),
            registry=r,
        )
        self.spend = Counter(
            "aigc_spend",
            "What calls cost, from reported usage and the model's price, in units of `currency`, "
            "by caller key name (empty with authentication off) and model.",
            ("key", "model", "currency"),
            registry=r,
        )
        self.overhead = Histogram(
            "aigc_overhead_seconds",
            "Time the service adds: whole RPC time minus the time spent waiting on the provider.",
            _RPC_LABELS,
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: prometheus_client validates the values and
        takes a lock on every labels() call (~2 µs, several per RPC); the children
        never change, and there are as many as the bounded label values allow."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


class MetricsServer:
    """The /metrics HTTP endpoint (prometheus_client's threaded WSGI server)."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        host, port = split_host_port(address)
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(port, host, registry=registry)
        self.port = self._httpd.server_port
        log.info("serving Prometheus metrics", extra={"address": f"{host}:{self.port}", "path": "/metrics"})

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
