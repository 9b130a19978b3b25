"""Observability settings, read once from the environment, typed, checked.

Parsed with server/envvars.py like every other setting (a bad value raises
ConfigError naming the variable).

    AIGC_LOG_FORMAT       json (default) | console
    AIGC_LOG_PROMPTS      false (default) | true: put prompt and answer text in access lines
    AIGC_METRICS_ADDRESS  host:port of the Prometheus endpoint, default 127.0.0.1:9464 (it lists key
                          names and their usage: loopback unless you choose otherwise); "off" disables it
    OTEL_EXPORTER_OTLP_ENDPOINT   the standard OpenTelemetry variable; traces are exported
                          (OTLP/gRPC) only when it (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Literal

from server.envvars import ConfigError, parse_bool, setting, split_host_port

LogFormat = Literal["json", "console"]


@dataclasses.dataclass(frozen=True)
class ObservabilitySettings:
    # How log lines are written to stdout.
    log_format: LogFormat = "json"
    # Whether access lines carry prompt and answer text (off: they may hold personal data).
    log_prompts: bool = False
    # host:port of the /metrics HTTP endpoint; None disables it.
    metrics_address: str | None = "127.0.0.1:9464"
    # OTLP/gRPC endpoint for traces; empty disables tracing (and never imports the SDK).
    otlp_traces_endpoint: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ObservabilitySettings:
        env = os.environ if environ is None else environ
        log_format = setting(env, "AIGC_LOG_FORMAT", "json", _log_format)
        metrics_address = setting(env, "AIGC_METRICS_ADDRESS", "127.0.0.1:9464", _metrics_address)
        # The traces-specific variable wins over the general one (OTel's rule).
        protocol = setting(env, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", str)
        protocol = setting(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol, str)
        endpoint = setting(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "", str)
        endpoint = setting(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint, str)
        if endpoint and protocol != "grpc":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only grpc is installed (the default; port 4317)"
            )
        return cls(
            log_format=log_format,
            log_prompts=setting(env, "AIGC_LOG_PROMPTS", False, parse_bool),
            metrics_address=metrics_address,
            otlp_traces_endpoint=endpoint,
        )


def _log_format(raw: str) -> LogFormat:
    lowered = raw.lower()
    if lowered not in ("json", "console"):
        raise ValueError("expected json or console")
    return lowered  # type: ignore[return-value]


def _metrics_address(raw: str) -> str | None:
    if raw.lower() == "off":
        return None
    try:
        split_host_port(raw)
    except ValueError:
        raise ValueError("expected host:port, e.g. 0.0.0.0:9464, or off") from None
    return raw
