"""The recorder on both databases: batches written, old rows pruned, and - on a
PostgreSQL that goes down - memory bounded, every dropped row counted, the
kept rows written once it is back."""

from __future__ import annotations

import dataclasses
import time

import pytest
from prometheus_client import CollectorRegistry

from server.store import Store, StoreSettings
from server.store.recorder import CallRecorder
from tests.server.store.test_database import call_row
from tests.support.postgres import PostgresServer


def queued(**overrides) -> dict:
    """A row as RpcRecord queues it: the start time in epoch seconds."""
    return {**call_row(**overrides), "time": overrides.get("time", time.time())}


def sample(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_added_rows_are_written_in_batches(store_settings):
    settings = dataclasses.replace(store_settings, batch_size=2)
    store = await Store.open(settings)
    registry = CollectorRegistry()
    recorder = CallRecorder(store, settings, registry)
    try:
        for i in range(5):
            recorder.add(queued(request_id=f"r{i}"))
        assert sample(registry, "aigc_call_records_pending") == 5
        assert await recorder.flush()
        assert await store.count_calls() == 5
        assert sample(registry, "aigc_call_records_written_total") == 5
        assert sample(registry, "aigc_call_records_pending") == 0
    finally:
        await store.close()


async def test_close_writes_what_is_pending(store_settings):
    """The writer waits up to an hour here: only close() can have written the rows."""
    settings = dataclasses.replace(store_settings, flush_seconds=3600)
    store = await Store.open(settings)
    recorder = CallRecorder(store, settings, CollectorRegistry())
    recorder.start()
    try:
        for i in range(3):
            recorder.add(queued(request_id=f"r{i}"))
        await recorder.close()
        assert await store.count_calls() == 3
    finally:
        await store.close()


async def test_a_batch_the_database_refuses_is_dropped_and_counted(store_settings):
    store = await Store.open(store_settings)
    registry = CollectorRegistry()
    recorder = CallRecorder(store, store_settings, registry)
    try:
        recorder.add({**queued(request_id="bad"), "status": None})  # NOT NULL column
        assert await recorder.flush()
        assert sample(registry, "aigc_call_records_dropped_total", reason="rejected") == 1
        recorder.add(queued(request_id="good"))  # and the recorder goes on
        assert await recorder.flush()
        assert [r["request_id"] for r in await store.list_calls()] == ["good"]
    finally:
        await store.close()


async def test_retention_prunes_old_calls(store_settings):
    settings = dataclasses.replace(store_settings, retention_days=1)
    store = await Store.open(settings)
    recorder = CallRecorder(store, settings, CollectorRegistry())
    try:
        recorder.add(queued(request_id="old", time=time.time() - 2 * 86400))
        recorder.add(queued(request_id="new"))
        assert await recorder.flush()
        assert await recorder.prune() == 1
        assert [r["request_id"] for r in await store.list_calls()] == ["new"]
    finally:
        await store.close()


@pytest.fixture
def own_postgres():
    """A PostgreSQL of this test's own, to kill."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_database_down_keeps_memory_bounded_and_counts_every_dropped_row(own_postgres, tmp_path):
    settings = StoreSettings.from_env(
        {"AIGC_DATA_DIR": str(tmp_path), "AIGC_DATABASE_URL": own_postgres.create_database()}
    )
    settings = dataclasses.replace(settings, max_pending=10, batch_size=4)
    store = await Store.open(settings)
    registry = CollectorRegistry()
    recorder = CallRecorder(store, settings, registry)
    try:
        own_postgres.kill()
        for i in range(25):
            recorder.add(queued(request_id=f"r{i}"))
        assert not await recorder.flush()  # the store is down: nothing written, nothing lost
        assert sample(registry, "aigc_call_record_write_errors_total") >= 1
        assert sample(registry, "aigc_call_records_pending") == 10
        assert sample(registry, "aigc_call_records_dropped_total", reason="queue_full") == 15
        own_postgres.start()
        assert await recorder.flush()
        assert sorted(r["request_id"] for r in await store.list_calls()) == sorted(f"r{i}" for i in range(10))
        assert sample(registry, "aigc_call_records_written_total") == 10
    finally:
        await store.close()
