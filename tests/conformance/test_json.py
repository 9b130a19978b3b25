"""Structured output: JSON mode and JSON schema reach the vendor; the answer is the text."""

from __future__ import annotations

import json

from tests.conformance.requests import chat, user
from tests.conformance.vendor import expected_sent

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


async def test_json_schema_is_sent_and_answer_parses(harness, vendor, fake):
    answer = '{"name": "Ada", "age": 36}'
    fake.script(vendor.text_reply([answer[:9], answer[9:]]))
    request = chat(
        user("Give me a person as JSON"),
        response_format={"type": "TYPE_JSON_SCHEMA", "schema": SCHEMA, "name": "person"},
    )
    result = await harness.unary(request)
    assert json.loads("".join(result.texts())) == {"name": "Ada", "age": 36}
    decoded = vendor.decode(fake.requests[0])
    assert decoded == expected_sent(request, vendor, "model-1")
    assert decoded.response_format == ("json_schema", SCHEMA)


async def test_json_mode_is_sent(harness, vendor, fake):
    fake.script(vendor.text_reply(['{"ok": true}']))
    request = chat(user("Answer in JSON"), response_format={"type": "TYPE_JSON"})
    await harness.unary(request)
    assert vendor.decode(fake.requests[0]).response_format[0] in ("json", "json_schema")
