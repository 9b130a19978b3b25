"""Hostile embeddings requests through Envoy and the real server, with the built-in
embedding model: on the typed route (/v1/embedding:generate) each gets a 4xx and a
google.rpc.Status body; on the OpenAI door (/openai/v1/embeddings) a 4xx in OpenAI's
error shape, carrying our reason as `code` and the Status under `status`. Never a
5xx, and the service goes on serving.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fuzz.status import assert_status

JSON = {"content-type": "application/json"}
LONG_TEXT = "word " * 600  # over the built-in model's 512 tokens


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


# name -> (body bytes, expected HTTP status, expected reason or None for "any")
TYPED: dict[str, tuple[bytes, int, str | None]] = {
    "no inputs": (b"{}", 400, "INVALID_REQUEST"),
    "3,000 inputs": (_body(inputs=["x"] * 3000), 400, "INVALID_REQUEST"),
    "an empty input": (_body(inputs=["a", ""]), 400, "INVALID_REQUEST"),
    "NUL in an input": (_body(inputs=["a\0b"]), 400, "INVALID_REQUEST"),
    "inputs is an object": (_body(inputs={"a": "b"}), 400, None),
    "inputs holds a number": (b'{"inputs":[1]}', 400, None),
    "invalid UTF-8 in an input": (b'{"inputs":["\xff\xfe"]}', 400, None),
    "negative output_dimensions": (_body(inputs=["a"], output_dimensions=-1), 400, "INVALID_REQUEST"),
    "output_dimensions over the maximum": (
        _body(inputs=["a"], output_dimensions=100_000),
        400,
        "INVALID_REQUEST",
    ),
    "2**31 output_dimensions": (b'{"inputs":["a"],"output_dimensions":2147483648}', 400, None),
    "output_dimensions on the built-in model": (
        _body(inputs=["a"], output_dimensions=64),
        400,
        "INVALID_REQUEST",
    ),
    "unknown task name": (_body(inputs=["a"], task="EMBEDDING_TASK_BOGUS"), 400, None),
    "unknown task number": (_body(inputs=["a"], task=99), 400, "INVALID_REQUEST"),
    "a chat model": (_body(model="smollm2", inputs=["a"]), 400, "CAPABILITY_NOT_SUPPORTED"),
    "an unknown model": (_body(model="no-such-model", inputs=["a"]), 404, "MODEL_NOT_FOUND"),
    "a text over the model's context": (_body(inputs=[LONG_TEXT]), 400, "CONTEXT_LENGTH_EXCEEDED"),
    "user_id of 300 characters": (_body(inputs=["a"], user_id="u" * 300), 400, "INVALID_REQUEST"),
    "vendor_params nested 60 deep": (
        b'{"inputs":["a"],"vendor_params":' + b'{"a":' * 60 + b"1" + b"}" * 60 + b"}",
        400,
        None,
    ),
}

DOOR: dict[str, tuple[bytes, int, str | None]] = {
    "not JSON": (b"{input:", 400, "MALFORMED_REQUEST"),
    "an array body": (b'["a"]', 400, "INVALID_REQUEST"),
    "no input": (_body(model="all-minilm-l6-v2"), 400, "INVALID_REQUEST"),
    "an empty input array": (_body(input=[]), 400, "INVALID_REQUEST"),
    "token ids": (_body(input=[1, 2, 3]), 400, "INVALID_REQUEST"),
    "token id arrays": (_body(input=[[1, 2], [3]]), 400, "INVALID_REQUEST"),
    "an empty string": (_body(input=""), 400, "INVALID_REQUEST"),
    "encoding_format hex": (_body(input="a", encoding_format="hex"), 400, "INVALID_REQUEST"),
    "dimensions 0": (_body(input="a", dimensions=0), 400, "INVALID_REQUEST"),
    "dimensions as a string": (_body(input="a", dimensions="64"), 400, "INVALID_REQUEST"),
    "dimensions true": (_body(input="a", dimensions=True), 400, "INVALID_REQUEST"),
    "dimensions 1e400": (b'{"input":"a","dimensions":1e400}', 400, None),
    "an unknown field": (_body(input="a", truncate=True), 400, "INVALID_REQUEST"),
    "model as a number": (_body(model=5, input="a"), 400, "INVALID_REQUEST"),
    "a chat model": (_body(model="smollm2", input="a"), 400, "CAPABILITY_NOT_SUPPORTED"),
    "an unknown model": (_body(model="no-such-model", input="a"), 404, "MODEL_NOT_FOUND"),
    "3,000 inputs": (_body(input=["x"] * 3000), 400, "INVALID_REQUEST"),
    "a text over the model's context": (_body(input=LONG_TEXT), 400, "CONTEXT_LENGTH_EXCEEDED"),
    "vendor_params not an object": (_body(input="a", vendor_params=[1]), 400, "INVALID_REQUEST"),
}


@pytest.mark.parametrize("name", list(TYPED))
def test_typed_route_refuses_with_a_status(http: httpx.Client, name: str) -> None:
    body, expected, reason = TYPED[name]
    resp = http.post("/v1/embedding:generate", content=body, headers=JSON)
    assert resp.status_code == expected, resp.text[:500]
    assert resp.headers["content-type"] == "application/json"
    info = assert_status(resp.json(), name)
    if reason is not None:
        assert info["reason"] == reason, resp.text[:500]
    assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize("name", list(DOOR))
def test_openai_door_refuses_in_openai_shape(http: httpx.Client, name: str) -> None:
    body, expected, reason = DOOR[name]
    resp = http.post("/openai/v1/embeddings", content=body, headers=JSON)
    assert resp.status_code == expected, resp.text[:500]
    error = resp.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] in ("invalid_request_error", "not_found_error"), error
    info = assert_status(error["status"], name)
    assert error["code"] == info["reason"]
    if reason is not None:
        assert info["reason"] == reason, resp.text[:500]


def test_embeddings_still_answer_afterwards(http: httpx.Client) -> None:
    resp = http.post("/openai/v1/embeddings", json={"input": ["still here"]})
    assert resp.status_code == 200, resp.text[:300]
    assert len(resp.json()["data"][0]["embedding"]) == 384
