"""Plain text answers: unary and streamed agree, deltas are well-formed."""

from __future__ import annotations

from aigc.v1 import generation_pb2
from tests.conformance.requests import chat, user
from tests.conformance.vendor import UsageSpec, expected_sent

USAGE = UsageSpec(prompt=11, completion=6)


async def test_text_stream_and_unary_agree(harness, vendor, fake):
    pieces = ["你好", "，世界", "！"]
    fake.script(vendor.text_reply(pieces, usage=USAGE), vendor.text_reply(pieces, usage=USAGE))
    request = chat(
        {"role": "ROLE_SYSTEM", "content": "Be brief."},
        user("用一句话打个招呼"),
        generation_config={"max_output_tokens": 32},
    )
    streamed = await harness.stream(request)
    unary = await harness.unary(request)
    for result in (streamed, unary):
        assert result.texts() == ["你好，世界！"]
        assert result.finish == generation_pb2.FINISH_REASON_STOP
        assert result.usage == USAGE.proto()
    # Events that arrive in one network read go on as one delta (SseStream.batches).
    assert "".join(p.text for d in streamed.deltas for p in d) == "".join(pieces)
    assert all(p.index == 0 for d in streamed.deltas for p in d)
    for recorded in fake.requests:
        assert vendor.decode(recorded) == expected_sent(request, vendor, "model-1")


async def test_max_tokens_finish(harness, vendor, fake):
    fake.script(vendor.text_reply(["cut sho"], finish="max_tokens", usage=USAGE))
    result = await harness.unary(chat(user("hi"), generation_config={"max_output_tokens": 2}))
    assert result.finish == generation_pb2.FINISH_REASON_MAX_TOKENS


async def test_no_usage_reported_means_no_usage(harness, vendor, fake):
    fake.script(vendor.text_reply(["ok"], usage=None))
    result = await harness.unary(chat(user("hi")))
    assert result.texts() == ["ok"]
    assert result.usage is None
