"""Cost from usage, for every vendor: the same in stream and unary, and absent
when the vendor reported no usage (a cut stream) - never invented."""

from __future__ import annotations

from decimal import Decimal

from server.core.engine import Engine
from server.pricing import Price, PriceBook
from tests.conformance.requests import chat, user
from tests.conformance.vendor import UsageSpec

DETAILED = UsageSpec(prompt=1200, completion=80, reasoning=30, cached=1024, cache_write=100)
PRICE = Price(
    "USD", input=Decimal(3), output=Decimal(15), cached_input=Decimal("0.3"), cache_write=Decimal("3.75")
)


def priced(harness):
    """The harness's engine, with a price for its one model."""
    build = harness.engine

    def engine(**options) -> Engine:
        plain = build(**options)
        return Engine(plain.router, prices=PriceBook({"m": PRICE}))

    harness.engine = engine
    return harness


async def test_cost_matches_in_stream_and_unary(harness, vendor, fake):
    usage = vendor.supported_usage(DETAILED)
    fake.script(vendor.text_reply(["ok"], usage=usage), vendor.text_reply(["ok"], usage=usage))
    harness = priced(harness)
    streamed = await harness.stream(chat(user("hi")))
    unary = await harness.unary(chat(user("hi")))
    assert streamed.usage.HasField("cost")
    assert streamed.usage.cost == unary.usage.cost == PRICE.cost(usage.proto())
    assert streamed.usage.cost.nanos > 0


async def test_no_usage_reported_means_no_cost(harness, vendor, fake):
    fake.script(vendor.text_reply(["ok"], usage=None))
    harness = priced(harness)
    result = await harness.unary(chat(user("hi")))
    assert result.usage is None or not result.usage.HasField("cost")
