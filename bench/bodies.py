"""The one request of the bench, in the three encodings the paths need.

The gateway request is written once, as the HTTP JSON body; the gRPC body is
the same JSON parsed into the Chat method's input message (found through the
service descriptor, so it does not depend on which file defines it) and framed
for the wire. The direct call is what the gateway itself sends upstream.
"""

from __future__ import annotations

import json
import pathlib
import struct
from typing import Any

from google.protobuf import json_format, message_factory

from aigc.v1 import aigc_service_pb2

PROMPT = "Write one sentence about the sea."
MAX_TOKENS = 64


def gateway_json(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "ROLE_USER", "content": PROMPT}],
        "generation_config": {"max_output_tokens": MAX_TOKENS},
    }


def grpc_frame(model: str) -> bytes:
    """A gRPC message frame: flag 0 (not compressed), 4-byte big-endian length, the protobuf."""
    method = aigc_service_pb2.DESCRIPTOR.services_by_name["AigcService"].methods_by_name["Chat"]
    request = json_format.ParseDict(gateway_json(model), message_factory.GetMessageClass(method.input_type)())
    payload = request.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def openai_json(upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """What the gateway sends the upstream for the request above (streams ask for usage, as it does)."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def write(folder: pathlib.Path, name: str, body: dict[str, Any] | bytes) -> pathlib.Path:
    path = folder / name
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    return path
