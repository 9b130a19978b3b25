"""The admin API's reads of the store: a page of calls, usage totals.

Every value from a request reaches SQL as a bound parameter, never as text of
the query; grouping columns come from a fixed table, not from the request.
Pages are keyset-paginated by row id (newest first), so a page is cheap
however deep, and rows recorded meanwhile do not shift it.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import sqlalchemy as sa

from server.store import Store
from server.store.schema import calls


@dataclasses.dataclass(frozen=True)
class CallFilter:
    key_name: str = ""
    model: str = ""
    status: str = ""
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        conditions: list[sa.ColumnElement[bool]] = []
        if self.key_name:
            conditions.append(calls.c.key_name == self.key_name)
        if self.model:
            conditions.append(calls.c.model == self.model)
        if self.status:
            conditions.append(calls.c.status == self.status)
        if self.start is not None:
            conditions.append(calls.c.time >= self.start)
        if self.end is not None:
            conditions.append(calls.c.time < self.end)
        return conditions


async def page_of_calls(
    store: Store, where: CallFilter, *, size: int, before_id: int | None
) -> list[dict[str, Any]]:
    """Up to `size` calls matching `where`, newest (highest id) first, below `before_id`."""
    query = sa.select(calls).where(*where.where())
    if before_id is not None:
        query = query.where(calls.c.id < before_id)
    query = query.order_by(calls.c.id.desc()).limit(size)
    async with store.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


# Dimension name -> how to read it from a row (the day depends on the dialect).
DIMENSIONS = ("key_name", "model", "provider", "surface", "day")


def _day(dialect: str) -> sa.ColumnElement[str]:
    if dialect == "postgresql":
        return sa.func.to_char(calls.c.time, "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", calls.c.time)


async def usage_totals(store: Store, where: CallFilter, group_by: tuple[str, ...]) -> list[dict[str, Any]]:
    """One dict per group: the dimensions' values, counts, token sums, latency
    mean and max, and `costs` {currency: nanos}; ordered by the dimensions."""
    columns = {
        "key_name": sa.func.coalesce(calls.c.key_name, ""),
        "model": calls.c.model,
        "provider": calls.c.provider,
        "surface": calls.c.surface,
        "day": _day(store.kind),
    }
    keys = [columns[name].label(name) for name in group_by]
    totals = sa.select(
        *keys,
        sa.func.count().label("calls"),
        sa.func.sum(sa.case((calls.c.status != "OK", 1), else_=0)).label("errors"),
        sa.func.sum(sa.case((calls.c.prompt_tokens.is_(None), 1), else_=0)).label("calls_without_usage"),
        sa.func.coalesce(sa.func.sum(calls.c.prompt_tokens), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(calls.c.completion_tokens), 0).label("completion_tokens"),
        sa.func.coalesce(sa.func.sum(calls.c.reasoning_tokens), 0).label("reasoning_tokens"),
        sa.func.coalesce(sa.func.sum(calls.c.cached_prompt_tokens), 0).label("cached_prompt_tokens"),
        sa.func.avg(calls.c.latency_ms).label("mean_latency_ms"),
        sa.func.max(calls.c.latency_ms).label("max_latency_ms"),
    ).where(*where.where())
    costs = (
        sa.select(*keys, calls.c.currency, sa.func.sum(calls.c.cost_nanos).label("nanos"))
        .where(*where.where(), calls.c.cost_nanos.is_not(None))
        .group_by(*keys, calls.c.currency)
    )
    if keys:
        totals = totals.group_by(*keys).order_by(*keys)
    async with store.connect() as conn:
        groups = [dict(row._mapping) for row in await conn.execute(totals)]
        cost_rows = [dict(row._mapping) for row in await conn.execute(costs)]
    by_group: dict[tuple, dict[str, int]] = {}
    for row in cost_rows:
        by_group.setdefault(tuple(row[name] for name in group_by), {})[row["currency"]] = int(row["nanos"])
    result = []
    for group in groups:
        if not group["calls"]:
            continue  # no grouping and no calls: SQL's one all-NULL row
        group["costs"] = by_group.get(tuple(group[name] for name in group_by), {})
        for name in (
            "errors",
            "calls_without_usage",
            "prompt_tokens",
            "completion_tokens",
            "reasoning_tokens",
        ):
            group[name] = int(group[name])
        group["cached_prompt_tokens"] = int(group["cached_prompt_tokens"])
        result.append(group)
    return result
