"""Reading settings from environment variables: one parser per kind of value.

config, catalog and the observability settings all read variables through
`setting`, so a bad value fails the same way everywhere: ConfigError naming
the variable, the value and what was expected - and the server does not start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable or file key."""


def setting(env: Mapping[str, str], name: str, default: _T, parse: Callable[[str], _T]) -> _T:
    """`parse` of the variable's stripped value; `default` when unset or blank.

    `parse` raises ValueError with what it expected; that becomes a ConfigError.
    """
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


def parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def split_host_port(raw: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets) as (host, port)."""
    host, sep, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port, e.g. 0.0.0.0:9000")
    return host, int(port)
