"""Prices per model, and what a call cost from its reported usage.

    book = load_prices(file_data, catalog, path)   # presets.toml + the config's [prices.MODEL]
    price = book.lookup(model_id, upstream, upstream_model)
    usage.cost.CopyFrom(price.cost(usage))          # google.type.Money

Prices are per million tokens, as Decimal: money is never a float here. The
cost is rounded half-up to the nano-unit (google.type.Money's precision).
Token counts follow aigc.v1.Usage: `prompt_tokens` includes the cached and
the cache-write tokens, `completion_tokens` includes the reasoning tokens, so
each is taken out of its total and priced at its own rate.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import pathlib
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from google.type import money_pb2

from aigc.v1 import generation_pb2
from server.catalog import Catalog
from server.envvars import ConfigError

PRESETS_FILE = pathlib.Path(__file__).with_name("presets.toml")
_MILLION = Decimal(1_000_000)
_NANO = Decimal("1e-9")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_RATES = ("input", "output", "cached_input", "cache_write", "reasoning")
_KEYS = {"currency", *_RATES, "as_of", "source", "note"}
# The largest price per million tokens accepted: a typo guard, far above any real price.
_MAX_RATE = Decimal(1_000_000)


@dataclasses.dataclass(frozen=True)
class Price:
    """A model's price per million tokens; None rates fall back (see `cost`)."""

    currency: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    as_of: datetime.date | None = None
    source: str = ""

    def cost(self, usage: generation_pb2.Usage) -> money_pb2.Money:
        """The cost of `usage` at this price, to the nano-unit."""
        cached = usage.cached_prompt_tokens if usage.HasField("cached_prompt_tokens") else 0
        written = usage.cache_write_prompt_tokens if usage.HasField("cache_write_prompt_tokens") else 0
        reasoning = usage.reasoning_tokens if usage.HasField("reasoning_tokens") else 0
        fresh_input = max(0, usage.prompt_tokens - cached - written)
        plain_output = max(0, usage.completion_tokens - reasoning)
        total = (
            fresh_input * self.input
            + cached * _or(self.cached_input, self.input)
            + written * _or(self.cache_write, self.input)
            + plain_output * self.output
            + reasoning * _or(self.reasoning, self.output)
        ) / _MILLION
        return to_money(total, self.currency)


def to_money(amount: Decimal, currency: str) -> money_pb2.Money:
    nanos_total = int((amount / _NANO).to_integral_value(rounding=decimal.ROUND_HALF_UP))
    units, nanos = divmod(nanos_total, 1_000_000_000)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def money_nanos(money: money_pb2.Money) -> int:
    """A Money amount as an integer count of nano-units (what the store keeps)."""
    return money.units * 1_000_000_000 + money.nanos


class PriceBook:
    def __init__(
        self, by_model: Mapping[str, Price], by_upstream_model: Mapping[tuple[str, str], Price] | None = None
    ) -> None:
        self._by_model = dict(by_model)
        self._by_upstream_model = dict(by_upstream_model or {})

    @classmethod
    def empty(cls) -> PriceBook:
        return cls({})

    def __len__(self) -> int:
        return len(self._by_model)

    def lookup(self, model_id: str, upstream: str, upstream_model: str) -> Price | None:
        """The price of a model by its id; a passthrough name (`openai/gpt-4o-mini`)
        by the configured model it reaches at the same upstream."""
        price = self._by_model.get(model_id)
        if price is None:
            price = self._by_upstream_model.get((upstream, upstream_model))
        return price


def load_prices(
    data: Mapping[str, Any], catalog: Catalog, path: str, extra_models: tuple[str, ...] = ()
) -> PriceBook:
    """presets.toml, then the config file's `[prices.MODEL]` tables (each replaces
    the model's whole price). `extra_models`: model ids served outside the
    catalog (the built-in local model)."""
    with PRESETS_FILE.open("rb") as file:
        presets = tomllib.load(file)["models"]
    known = {model.id for model in catalog.models} | set(extra_models)
    prices = {
        model_id: _price(table, f"{PRESETS_FILE.name} [models.{model_id}]")
        for model_id, table in presets.items()
    }
    overrides = data.get("prices", {})
    where = path or "(no config file)"
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: [prices] must be a table of [prices.MODEL] tables")
    for model_id, table in overrides.items():
        if model_id not in known:
            raise ConfigError(f"{where} [prices.{model_id}]: no model with this id is configured")
        prices[model_id] = _price(table, f"{where} [prices.{model_id}]")
    by_model = {model_id: price for model_id, price in prices.items() if model_id in known}
    by_upstream_model = {
        (model.upstream, model.upstream_model): by_model[model.id]
        for model in catalog.models
        if model.id in by_model
    }
    return PriceBook(by_model, by_upstream_model)


def _price(table: Any, where: str) -> Price:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    for required in ("input", "output"):
        if required not in table:
            raise ConfigError(f"{where}: {required!r} is required (price per million tokens)")
    currency = table.get("currency", "USD")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ConfigError(f'{where}: currency must be an ISO 4217 code such as "USD" or "CNY"')
    rates = {name: _rate(table[name], f"{where} {name}") for name in _RATES if name in table}
    as_of = table.get("as_of")
    if as_of is not None and not isinstance(as_of, datetime.date):
        raise ConfigError(f"{where}: as_of must be a date (2025-09-29)")
    source = table.get("source", "")
    if not isinstance(source, str):
        raise ConfigError(f"{where}: source must be a string")
    return Price(currency=currency, as_of=as_of, source=source, **rates)


def _rate(value: Any, where: str) -> Decimal:
    # bool is an int in Python: refuse it explicitly.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: expected a price per million tokens, e.g. 0.15")
    try:
        rate = Decimal(str(value))
    except decimal.InvalidOperation:
        raise ConfigError(f"{where}: expected a price per million tokens, e.g. 0.15") from None
    if not rate.is_finite() or not 0 <= rate <= _MAX_RATE:
        raise ConfigError(f"{where}: expected a price per million tokens between 0 and {_MAX_RATE}")
    return rate


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value
