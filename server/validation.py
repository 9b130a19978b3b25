"""Checks requests against the contract and turns them into provider requests.

Every violation is collected, so the caller learns about all bad fields at
once (google.rpc.BadRequest lists them), not one per round trip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from aigc.v1 import aigc_service_pb2, content_pb2
from server.errors import InvalidRequest
from server.providers.base import ChatMessage, GenerateRequest, Role, Sampling

MAX_STOP_SEQUENCES = 4
MAX_USER_ID_CHARS = 256

_ROLES: dict[int, Role] = {
    content_pb2.ROLE_SYSTEM: "system",
    content_pb2.ROLE_USER: "user",
    content_pb2.ROLE_ASSISTANT: "assistant",
}

# Keys of vendor_params that would override what the typed fields control.
_RESERVED_VENDOR_KEYS = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "user",
    }
)


def chat_request(request: aigc_service_pb2.ChatRequest, timeout: float | None) -> GenerateRequest:
    """The provider request for a valid ChatRequest; routing fills `upstream_model`."""
    violations: dict[str, str] = {}
    if not request.messages:
        violations["messages"] = "at least one message is required"
    messages = []
    for i, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            violations[f"messages[{i}].role"] = "must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT"
        if not message.content:
            violations[f"messages[{i}].content"] = "must not be empty"
        if role is not None:
            messages.append(ChatMessage(role=role, content=message.content))
    if messages and all(m.role == "system" for m in messages):
        violations["messages"] = "needs at least one user or assistant message"
    sampling = _sampling(request.generation_config, violations)
    vendor_params = _vendor_params(request, violations)
    _check_user_id(request.user_id, violations)
    if violations:
        raise InvalidRequest(violations)
    return GenerateRequest(
        upstream_model="",
        messages=tuple(messages),
        sampling=sampling,
        user_id=request.user_id,
        vendor_params=vendor_params,
        timeout=timeout,
    )


def complete_request(request: aigc_service_pb2.CompleteRequest, timeout: float | None) -> GenerateRequest:
    """The provider request for a valid CompleteRequest; routing fills `upstream_model`."""
    violations: dict[str, str] = {}
    if not request.prompt:
        violations["prompt"] = "must not be empty"
    sampling = _sampling(request.generation_config, violations)
    vendor_params = _vendor_params(request, violations)
    _check_user_id(request.user_id, violations)
    if violations:
        raise InvalidRequest(violations)
    return GenerateRequest(
        upstream_model="",
        prompt=request.prompt,
        sampling=sampling,
        user_id=request.user_id,
        vendor_params=vendor_params,
        timeout=timeout,
    )


def _sampling(config: content_pb2.GenerationConfig, violations: dict[str, str]) -> Sampling:
    def ranged(field: str, low: float, high: float, *, low_open: bool = False) -> float | None:
        if not config.HasField(field):
            return None
        value = getattr(config, field)
        ok = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
        if not ok:
            bound = "(" if low_open else "["
            violations[f"generation_config.{field}"] = f"must be in {bound}{low:g}, {high:g}]"
        return value

    max_tokens = None
    if config.HasField("max_output_tokens"):
        max_tokens = config.max_output_tokens
        if max_tokens <= 0:
            violations["generation_config.max_output_tokens"] = "must be greater than 0"
    stops = tuple(config.stop_sequences)
    if len(stops) > MAX_STOP_SEQUENCES:
        violations["generation_config.stop_sequences"] = f"at most {MAX_STOP_SEQUENCES} are allowed"
    elif any(not s for s in stops):
        violations["generation_config.stop_sequences"] = "must not contain empty strings"
    return Sampling(
        max_output_tokens=max_tokens,
        temperature=ranged("temperature", 0, 2),
        top_p=ranged("top_p", 0, 1, low_open=True),
        stop_sequences=stops,
        seed=config.seed if config.HasField("seed") else None,
        presence_penalty=ranged("presence_penalty", -2, 2),
        frequency_penalty=ranged("frequency_penalty", -2, 2),
    )


def _vendor_params(
    request: aigc_service_pb2.ChatRequest | aigc_service_pb2.CompleteRequest,
    violations: dict[str, str],
) -> Mapping[str, Any]:
    if not request.HasField("vendor_params"):
        return {}
    params = _integral_numbers(json_format.MessageToDict(request.vendor_params))
    clashes = sorted(_RESERVED_VENDOR_KEYS & params.keys())
    if clashes:
        violations["vendor_params"] = (
            f"{', '.join(clashes)} must be set through the typed request fields, not vendor_params"
        )
    return params


def _check_user_id(user_id: str, violations: dict[str, str]) -> None:
    if len(user_id) > MAX_USER_ID_CHARS:
        violations["user_id"] = f"at most {MAX_USER_ID_CHARS} characters"


def _integral_numbers(value: Any) -> Any:
    """Struct stores every number as a double; vendors validating integer
    fields (e.g. `n`, `top_k`) reject 5.0, so whole numbers go out as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(v) for v in value]
    return value
