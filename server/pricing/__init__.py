"""Prices per model and the cost of a call.

presets.toml  the prices of the models the presets ship, with date and source
book.py       PriceBook (presets + the config file's [prices.MODEL]), Price.cost(usage)
"""

from server.pricing.book import Price, PriceBook, load_prices, money_nanos, to_money

__all__ = ["Price", "PriceBook", "load_prices", "money_nanos", "to_money"]
