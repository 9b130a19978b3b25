"""JSON objects from the doors (tool schemas, vendor params) into protobuf Structs, or why not.

A Struct nests three protobuf messages per JSON level (Struct, its map entry,
Value), and protobuf refuses to decode messages nested past 100 levels: a
JSON object deeper than MAX_DEPTH inside a request would parse here, then fail
when the request is copied or sent on (a 500). It is refused up front instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, message, struct_pb2

# JSON levels below the Struct's own: a tool schema in a ChatRequest decodes to 32.
MAX_DEPTH = 30


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_struct(value: Mapping[str, Any], out: struct_pb2.Struct) -> str:
    """Fills `out` from a JSON object; "" when it worked, else why not."""
    if depth(value) > MAX_DEPTH:
        return f"nests deeper than {MAX_DEPTH} levels"
    try:
        json_format.ParseDict(value, out)
    except (json_format.ParseError, message.DecodeError, ValueError, TypeError) as exc:
        return f"is not valid JSON for a protobuf Struct: {exc}"
    return ""


__all__ = ["MAX_DEPTH", "depth", "parse_struct"]
