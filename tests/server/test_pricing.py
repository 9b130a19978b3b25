"""Prices per model and the cost of a call (server/pricing/)."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from google.type import money_pb2

from aigc.v1 import generation_pb2
from server.catalog import PRESETS, load_catalog
from server.envvars import ConfigError
from server.pricing import Price, load_prices

CLAUDE_LIKE = Price(
    "USD", input=Decimal(3), output=Decimal(15), cached_input=Decimal("0.30"), cache_write=Decimal("3.75")
)


def usage(prompt, completion, *, cached=None, written=None, reasoning=None) -> generation_pb2.Usage:
    u = generation_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    if cached is not None:
        u.cached_prompt_tokens = cached
    if written is not None:
        u.cache_write_prompt_tokens = written
    if reasoning is not None:
        u.reasoning_tokens = reasoning
    return u


def test_each_kind_of_token_is_priced_at_its_own_rate():
    # 76 fresh input x 3 + 1024 cached x 0.30 + 100 written x 3.75 + 50 output x 15
    # + 30 reasoning x 15 (billed as output) = 2110.2 per million tokens.
    cost = CLAUDE_LIKE.cost(usage(1200, 80, cached=1024, written=100, reasoning=30))
    assert cost == money_pb2.Money(currency_code="USD", units=0, nanos=2_110_200)


def test_reasoning_has_its_own_rate_where_the_price_says_so():
    price = Price("USD", input=Decimal(3), output=Decimal(15), reasoning=Decimal(2))
    # 1200 x 3 + 50 x 15 + 30 x 2 = 4410 per million.
    assert price.cost(usage(1200, 80, reasoning=30)).nanos == 4_410_000


def test_absent_details_price_everything_at_the_base_rates():
    price = Price("CNY", input=Decimal("0.8"), output=Decimal(2))
    # 1_000_000 x 0.8 + 2_000_000 x 2 = 4.8 CNY
    assert price.cost(usage(1_000_000, 2_000_000)) == money_pb2.Money(
        currency_code="CNY", units=4, nanos=800_000_000
    )


def test_cost_is_rounded_half_up_to_the_nano_unit():
    price = Price("USD", input=Decimal("0.0005"), output=Decimal(0))
    assert price.cost(usage(1, 0)).nanos == 1  # 0.5 nano-units
    assert price.cost(usage(0, 0)).nanos == 0


def test_every_preset_model_has_a_price_with_its_date_and_source():
    catalog = load_catalog({})
    book = load_prices({}, catalog, "")
    preset_models = [(p.name, m[0], m[1]) for p in PRESETS for m in p.models]
    assert preset_models
    for upstream, model_id, upstream_model in preset_models:
        price = book.lookup(model_id, upstream, upstream_model)
        assert price is not None, model_id
        assert price.as_of is not None and price.source.startswith("https://"), model_id
        assert price.currency in ("USD", "CNY"), model_id


def test_a_passthrough_name_costs_what_its_configured_model_costs():
    book = load_prices({}, load_catalog({}), "")
    assert book.lookup("openai/gpt-4o-mini", "openai", "gpt-4o-mini") == book.lookup("gpt-4o-mini", "x", "y")
    assert book.lookup("openai/some-new-model", "openai", "some-new-model") is None
    assert book.lookup("smollm2", "local", "smollm2") is None  # the local model: no price, no cost


def test_the_config_file_overrides_a_model_s_whole_price():
    data = {
        "prices": {
            "gpt-4o-mini": {
                "currency": "EUR",
                "input": 1,
                "output": "2.5",
                "as_of": datetime.date(2026, 1, 2),
            }
        }
    }
    book = load_prices(data, load_catalog({}), "aigc.toml")
    price = book.lookup("gpt-4o-mini", "openai", "gpt-4o-mini")
    assert price == Price("EUR", input=Decimal(1), output=Decimal("2.5"), as_of=datetime.date(2026, 1, 2))
    # A model outside the catalog (the built-in local one) gets a price when named.
    book = load_prices(
        {"prices": {"smollm2": {"input": 1, "output": 1}}}, load_catalog({}), "f", ("smollm2",)
    )
    assert book.lookup("smollm2", "local", "smollm2").currency == "USD"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"nope-model": {"input": 1, "output": 1}}, "no model with this id"),
        ({"gpt-4o": {"input": 1}}, "'output' is required"),
        ({"gpt-4o": {"input": 1, "output": 1, "currency": "usd"}}, "ISO 4217"),
        ({"gpt-4o": {"input": -1, "output": 1}}, "between 0 and"),
        ({"gpt-4o": {"input": True, "output": 1}}, "price per million tokens"),
        ({"gpt-4o": {"input": "1e400000", "output": 1}}, "between 0 and"),
        ({"gpt-4o": {"input": "NaN", "output": 1}}, "between 0 and"),
        ({"gpt-4o": {"input": "'; DROP TABLE", "output": 1}}, "price per million tokens"),
        ({"gpt-4o": {"input": 1, "output": 1, "cahced_input": 1}}, "unknown keys ['cahced_input']"),
        ({"gpt-4o": {"input": 1, "output": 1, "as_of": "yesterday"}}, "as_of must be a date"),
        ({"gpt-4o": "cheap"}, "must be a table"),
    ],
)
def test_a_bad_price_in_the_config_file_stops_the_server_naming_it(table, message):
    with pytest.raises(ConfigError, match=r"aigc\.toml") as caught:
        load_prices({"prices": table}, load_catalog({}), "aigc.toml")
    assert message in str(caught.value)
