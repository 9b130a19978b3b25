"""JSON objects from the doors (tool schemas, vendor params) into protobuf Structs, or why not.

A Struct nests three protobuf messages per JSON level (Struct, its map entry,
Value), and protobuf refuses to decode messages nested past 100 levels: a JSON
object deeper than the core's MAX_STRUCT_DEPTH (32: the deepest a tool schema
inside a ChatRequest still survives a serialize/parse round trip) would parse
here, then fail when the request is copied or sent on (a 500). It is refused
up front instead, by the same rule the core applies to gRPC callers' Structs
(server/core/validation.py), so every surface has one bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, message, struct_pb2

from server.core.validation import MAX_STRUCT_DEPTH, json_depth_problem


def parse_struct(value: Mapping[str, Any], out: struct_pb2.Struct) -> str:
    """Fills `out` from a JSON object; "" when it worked, else why not."""
    why = json_depth_problem(value)
    if why:
        return why
    try:
        json_format.ParseDict(value, out)
    except (json_format.ParseError, message.DecodeError, ValueError, TypeError) as exc:
        return f"is not valid JSON for a protobuf Struct: {exc}"
    return ""


__all__ = ["MAX_STRUCT_DEPTH", "parse_struct"]
