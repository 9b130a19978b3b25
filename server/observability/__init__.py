"""Logs, metrics and traces: what an operator sees of each RPC.

settings.py  ObservabilitySettings (AIGC_LOG_FORMAT, AIGC_LOG_PROMPTS, AIGC_METRICS_ADDRESS, OTEL_*)
logs.py      JSON / console formatters; the request id context variable
metrics.py   Prometheus metrics on a per-server registry; the /metrics endpoint
tracing.py   the span interface and its no-op; otel.py the OpenTelemetry one (lazy)
rpc.py       RpcRecord: one per RPC, writes the access line, metrics and spans
"""

from server.observability.logs import configure as configure_logging
from server.observability.metrics import Metrics, MetricsServer
from server.observability.rpc import Observability, RpcRecord
from server.observability.settings import ObservabilitySettings
from server.observability.tracing import Tracing, tracing_for

__all__ = [
    "Metrics",
    "MetricsServer",
    "Observability",
    "ObservabilitySettings",
    "RpcRecord",
    "Tracing",
    "configure_logging",
    "tracing_for",
]
