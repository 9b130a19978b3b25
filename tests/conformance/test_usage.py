"""Usage details: reasoning and cached tokens where the vendor reports them; absent, not zero, otherwise."""

from __future__ import annotations

from tests.conformance.requests import chat, user
from tests.conformance.vendor import UsageSpec

DETAILED = UsageSpec(prompt=1200, completion=80, reasoning=30, cached=1024)


async def test_usage_details_match_in_stream_and_unary(harness, vendor, fake):
    usage = vendor.supported_usage(DETAILED)
    fake.script(vendor.text_reply(["ok"], usage=usage), vendor.text_reply(["ok"], usage=usage))
    request = chat(user("hi"))
    streamed = await harness.stream(request)
    unary = await harness.unary(request)
    assert streamed.usage == unary.usage == usage.proto()


async def test_usage_without_details_has_no_details(harness, vendor, fake):
    fake.script(vendor.text_reply(["ok"], usage=UsageSpec(5, 7)))
    result = await harness.unary(chat(user("hi")))
    assert result.usage.total_tokens == 12
    for field in ("reasoning_tokens", "cached_prompt_tokens", "cache_write_prompt_tokens"):
        assert not result.usage.HasField(field), field
