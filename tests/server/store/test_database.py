"""The store on both databases: migrations at start-up (also several processes at
once), writing and reading calls, retention, and configuration mistakes."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
import sqlalchemy as sa

from server.envvars import ConfigError
from server.store import Store, StoreSettings
from server.store.database import HEAD
from server.store.schema import metadata
from tests.support.processes import ROOT, python_env

# Every character SQL or a shell treats specially, in every string column.
NASTY = "x'; DROP TABLE calls; --\"\\%_\x00".replace("\x00", "") + "\u202e中"


def call_row(**overrides) -> dict:
    row = {
        "request_id": "req-1",
        "time": datetime.datetime(2026, 12, 1, 12, 0, 0),
        "key_name": "team-a",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "surface": "grpc",
        "method": "Chat",
        "status": "OK",
        "reason": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "reasoning_tokens": None,
        "cached_prompt_tokens": None,
        "cache_write_prompt_tokens": None,
        "cost_nanos": 4500,
        "currency": "USD",
        "latency_ms": 12.5,
        "ttft_ms": 3.0,
        "retries": 0,
        "fallbacks": "",
        "cancelled": False,
    }
    row.update(overrides)
    return row


async def test_open_migrates_an_empty_database_to_the_newest_schema(store_settings):
    store = await Store.open(store_settings)
    try:
        assert await store.schema_revision() == HEAD
        assert await store.count_calls() == 0
    finally:
        await store.close()
    # Opening again (a restart) finds it current and changes nothing.
    store = await Store.open(store_settings)
    try:
        assert await store.schema_revision() == HEAD
    finally:
        await store.close()


def test_processes_starting_at_once_all_open_the_store(store_env):
    """Workers and replicas start together: each runs the migrations; none may fail."""
    script = (
        "import asyncio\n"
        "from server.store import Store, StoreSettings\n"
        "async def main():\n"
        "    store = await Store.open(StoreSettings.from_env())\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    env = python_env(store_env)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    failures = [p.stderr.read() for p in procs if p.wait(60) != 0]
    assert not failures, failures[0]


async def test_calls_are_written_and_read_back_exactly(store_settings):
    store = await Store.open(store_settings)
    try:
        rows = [
            call_row(request_id=f"req-{i}", time=datetime.datetime(2026, 12, 1, 12, 0, i)) for i in range(3)
        ]
        nasty = call_row(
            request_id="req-nasty",
            time=datetime.datetime(2026, 12, 1, 12, 1, 0),
            key_name=NASTY,
            model=NASTY,
            provider=NASTY,
            reason=NASTY[:64],
            fallbacks=NASTY,
            prompt_tokens=None,
            completion_tokens=None,
            cost_nanos=None,
            currency=None,
            ttft_ms=None,
            cancelled=True,
        )
        await store.insert_calls([*rows, nasty])
        listed = await store.list_calls(limit=10)
        assert [r["request_id"] for r in listed] == ["req-nasty", "req-2", "req-1", "req-0"]
        got = {k: v for k, v in listed[0].items() if k != "id"}
        assert got == nasty  # absent usage and cost stay NULL, never 0
        assert await store.count_calls() == 4
    finally:
        await store.close()


async def test_retention_deletes_only_older_calls(store_settings):
    store = await Store.open(store_settings)
    try:
        old = datetime.datetime(2026, 1, 1)
        new = datetime.datetime(2026, 12, 1)
        await store.insert_calls([call_row(request_id="old", time=old), call_row(request_id="new", time=new)])
        assert await store.delete_calls_before(datetime.datetime(2026, 6, 1)) == 1
        assert [r["request_id"] for r in await store.list_calls()] == ["new"]
    finally:
        await store.close()


async def test_the_schema_matches_the_tables_the_code_uses(store_settings):
    """The migrations and schema.py describe the same tables and columns."""
    store = await Store.open(store_settings)
    try:
        for table in metadata.tables.values():
            async with store.connect() as conn:
                found = await conn.run_sync(lambda c, name=table.name: sa.inspect(c).get_columns(name))
            expected = {column.name for column in table.columns}
            assert {column["name"] for column in found} == expected, table.name
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://root:hunter2@db/aigc", "postgresql://root:hunter2@db", "not a url hunter2"],
)
def test_a_bad_database_url_is_refused_without_echoing_it(url):
    with pytest.raises(ConfigError) as caught:
        StoreSettings.from_env({"AIGC_DATABASE_URL": url})
    assert "AIGC_DATABASE_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_defaults_need_no_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = StoreSettings.from_env({})
    assert settings.kind == "sqlite"
    assert settings.data_dir == tmp_path / ".aigc"
    assert settings.url.database == str(tmp_path / ".aigc" / "aigc.db")
    assert settings.record_calls
