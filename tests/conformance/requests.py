"""Building aigc.v1 requests for the suite, briefly."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from aigc.v1 import aigc_service_pb2


def chat(*messages: dict[str, Any], **fields: Any) -> aigc_service_pb2.ChatRequest:
    """A ChatRequest from its JSON form: `chat({"role": "ROLE_USER", "content": "hi"}, tools=[...])`."""
    return json_format.ParseDict({"messages": list(messages), **fields}, aigc_service_pb2.ChatRequest())


def user(text: str) -> dict[str, Any]:
    return {"role": "ROLE_USER", "content": text}


WEATHER = {
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    }
}
TIME = {
    "function": {
        "name": "get_time",
        "description": "Local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
}
