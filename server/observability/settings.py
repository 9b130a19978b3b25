"""Observability settings, read once from the environment, typed, checked.

They live here until the lead folds them into server/config.py; the parsing
follows that module (a bad value raises ConfigError naming the variable).

    AIGC_LOG_FORMAT       json (default) | console
    AIGC_LOG_PROMPTS      false (default) | true: put prompt and answer text in access lines
    AIGC_METRICS_ADDRESS  host:port of the Prometheus endpoint, default 0.0.0.0:9464; "off" disables it
    OTEL_EXPORTER_OTLP_ENDPOINT   the standard OpenTelemetry variable; traces are exported
                          (OTLP/gRPC) only when it (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Literal

from server.config import ConfigError

LogFormat = Literal["json", "console"]


@dataclasses.dataclass(frozen=True)
class ObservabilitySettings:
    # How log lines are written to stdout.
    log_format: LogFormat = "json"
    # Whether access lines carry prompt and answer text (off: they may hold personal data).
    log_prompts: bool = False
    # host:port of the /metrics HTTP endpoint; None disables it.
    metrics_address: str | None = "0.0.0.0:9464"
    # OTLP/gRPC endpoint for traces; empty disables tracing (and never imports the SDK).
    otlp_traces_endpoint: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ObservabilitySettings:
        env = os.environ if environ is None else environ
        log_format = _get(env, "AIGC_LOG_FORMAT", "json").lower()
        if log_format not in ("json", "console"):
            raise ConfigError(f"AIGC_LOG_FORMAT={log_format!r}: expected json or console")
        metrics = _get(env, "AIGC_METRICS_ADDRESS", "0.0.0.0:9464")
        if metrics.lower() == "off":
            metrics_address = None
        else:
            split_address(metrics, "AIGC_METRICS_ADDRESS")
            metrics_address = metrics
        protocol = _get(
            env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", _get(env, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        )
        endpoint = _get(
            env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "")
        )
        if endpoint and protocol != "grpc":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only grpc is installed (the default; port 4317)"
            )
        return cls(
            log_format=log_format,  # type: ignore[arg-type]
            log_prompts=_bool(env, "AIGC_LOG_PROMPTS"),
            metrics_address=metrics_address,
            otlp_traces_endpoint=endpoint,
        )


def split_address(address: str, name: str = "address") -> tuple[str, int]:
    """host:port (IPv6 hosts in brackets) as (host, port); ConfigError names `name`."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}={address!r}: expected host:port, e.g. 0.0.0.0:9464, or off")
    return host, int(port)


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    return raw or default


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = _get(env, name, "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")
