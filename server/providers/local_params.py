"""What a caller may ask of llama.cpp through `vendor_params`: a bounded allowlist.

llama.cpp's server takes dozens of request fields beyond OpenAI's, and some
cost far more than they look, on the CPU every other caller shares:
5,000 `dry_sequence_breakers` kept a core busy for half a minute before the
first token (llama.cpp prepares each breaker against the whole vocabulary,
in the loop that decodes for every slot, so nothing else moves meanwhile);
`n_probs: 100000` made every token ~12x dearer. Others reach past the
request: `id_slot` picks another caller's slot, `lora` and
`chat_template_kwargs` change the model or its template.

So the local provider takes only the sampling fields below, each within
bounds that keep its cost near the default's, and refuses anything else with
INVALID_ARGUMENT naming the field (the fields the typed request controls,
`n_predict`, `grammar`, ..., are refused before this, as reserved). The rules
are a JSON Schema, checked with `jsonschema` like every other schema here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema


def _number(low: float, high: float) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high}


def _integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def schema(context_tokens: int) -> dict[str, Any]:
    """The allowlist for a model with `context_tokens` per slot (the look-back
    windows are bounded by what a slot can hold; -1 means "the whole context")."""
    return {
        "type": "object",
        "properties": {
            "top_k": _integer(0, 1000),
            "min_p": _number(0, 1),
            "typical_p": _number(0, 1),
            "top_n_sigma": _number(-1, 100),
            "min_keep": _integer(0, 100),
            "repeat_penalty": _number(0, 10),
            "repeat_last_n": _integer(-1, context_tokens),
            "dynatemp_range": _number(0, 10),
            "dynatemp_exponent": _number(0, 10),
            "mirostat": {"enum": [0, 1, 2]},
            "mirostat_tau": _number(0, 100),
            "mirostat_eta": _number(0, 1),
            "xtc_probability": _number(0, 1),
            "xtc_threshold": _number(0, 1),
            "dry_multiplier": _number(0, 10),
            "dry_base": _number(1, 10),
            "dry_allowed_length": _integer(0, 100),
            "dry_penalty_last_n": _integer(-1, context_tokens),
            # llama.cpp's default is 4 breakers ("\n", ":", "\"", "*").
            "dry_sequence_breakers": {
                "type": "array",
                "maxItems": 16,
                "items": {"type": "string", "minLength": 1, "maxLength": 32},
            },
            # Bounded by max_output_tokens like any answer.
            "ignore_eos": {"type": "boolean"},
            "cache_prompt": {"type": "boolean"},
        },
    }


class LocalParams:
    """The allowlist of one local model; `problems(params)` is field path -> why."""

    def __init__(self, context_tokens: int) -> None:
        self._schema = schema(context_tokens)
        self._allowed: Mapping[str, Any] = self._schema["properties"]
        jsonschema.Draft202012Validator.check_schema(self._schema)
        self._validator = jsonschema.Draft202012Validator(self._schema)

    def problems(self, params: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in params:
            if key not in self._allowed:
                out[f"vendor_params.{key}"] = (
                    "not offered by the local model (llama.cpp); it takes only: " + ", ".join(self._allowed)
                )
        known = {k: v for k, v in params.items() if k in self._allowed}
        for error in self._validator.iter_errors(known):
            path = ".".join(str(p) for p in error.absolute_path)
            out.setdefault(f"vendor_params.{path}", _why(error))
        return out


def _why(error: jsonschema.ValidationError) -> str:
    """The rule that failed, without the value (which may be huge)."""
    rule, bound = error.validator, error.validator_value
    return {
        "type": f"must be of type {bound}",
        "minimum": f"must be at least {bound}",
        "maximum": f"must be at most {bound}",
        "enum": f"must be one of {bound}",
        "maxItems": f"at most {bound} items",
        "minLength": f"at least {bound} character(s)",
        "maxLength": f"at most {bound} characters",
    }.get(str(rule), f"fails the {rule} rule of the local model's allowlist")


__all__ = ["LocalParams", "schema"]
