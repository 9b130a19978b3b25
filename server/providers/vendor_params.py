"""Putting caller-supplied JSON into vendor request bodies.

`merge(body, vendor_params)` adds the caller's `vendor_params` to a body the
provider built from the typed request. Objects merge key by key (so a Gemini
caller can add `generationConfig.topK` next to our `maxOutputTokens`); any
other value is the caller's. The keys the typed request controls were
refused earlier (server/core/validation.py, `check_vendor_params` with the
provider's `reserved_vendor_keys`), so a merge never overwrites them.

`struct_to_dict` turns a google.protobuf.Struct (tool parameters, schemas)
into plain JSON, whole numbers as ints: a Struct stores every number as a
double, and vendors validating integers (`minItems: 1`) reject `1.0`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2


def merge(body: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with `params` deep-merged into it (in place; returned for convenience)."""
    for key, value in params.items():
        mine = body.get(key)
        if isinstance(mine, dict) and isinstance(value, Mapping):
            merge(mine, value)
        else:
            body[key] = value
    return body


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return integral_numbers(json_format.MessageToDict(struct))


def integral_numbers(value: Any) -> Any:
    """Whole floats as ints, recursively (see the module docstring)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral_numbers(x) for k, x in value.items()}
    if isinstance(value, list):
        return [integral_numbers(x) for x in value]
    return value


__all__ = ["integral_numbers", "merge", "struct_to_dict"]
