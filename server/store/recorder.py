"""The record of every call, written off the hot path in batches.

    recorder = CallRecorder(store, settings, registry)
    recorder.start()            # the writer task
    recorder.add(row)           # per call, from RpcRecord: an append, nothing more
    await recorder.close()      # on drain: writes everything still pending

Rows wait in memory until a batch is full or `flush_seconds` passed, then go
in one INSERT. While the database is slow or down they stay pending and the
write is retried; the pending rows are bounded by `max_pending`, and a row
that finds no room is dropped and counted (aigc_call_records_dropped_total
{reason="queue_full"}), with a warning - never silently. A batch the database
refuses as invalid (not an outage) is dropped and counted as "rejected".

Metrics (on the server's registry; workers' values summed by the supervisor):

    aigc_call_records_written_total          rows written
    aigc_call_records_dropped_total{reason}  queue_full | rejected | shutdown
    aigc_call_records_pending                rows in memory now
    aigc_call_record_write_errors_total      failed writes (each retried)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import time
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge

from server.store.database import Store
from server.store.settings import StoreSettings

log = logging.getLogger(__name__)

# Errors that say the rows themselves are wrong: retrying cannot help.
_REJECTED = (sa.exc.DataError, sa.exc.IntegrityError, sa.exc.ProgrammingError)
_RETENTION_EVERY_SECONDS = 3600.0
# After a failed write, wait this long (doubling, at most the cap) before the next.
_RETRY_FIRST = 0.5
_RETRY_CAP = 30.0


class CallRecorder:
    def __init__(self, store: Store, settings: StoreSettings, registry: CollectorRegistry) -> None:
        self._store = store
        self._settings = settings
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._warned_full = False
        self.written = Counter(
            "aigc_call_records_written", "Call records written to the store.", registry=registry
        )
        self.dropped = Counter(
            "aigc_call_records_dropped",
            "Call records not written: queue_full (the database was slow or down too long), "
            "rejected (the database refused the batch), shutdown (still pending when the drain ended).",
            ("reason",),
            registry=registry,
        )
        self.pending = Gauge(
            "aigc_call_records_pending",
            "Call records in memory, waiting to be written.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.write_errors = Counter(
            "aigc_call_record_write_errors", "Failed writes of call records (retried).", registry=registry
        )

    def add(self, row: dict[str, Any]) -> None:
        """Queues one finished call. Never blocks, never raises."""
        if len(self._pending) >= self._settings.max_pending:
            self.dropped.labels("queue_full").inc()
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "call records dropped: %d are pending and the store is not taking them",
                    len(self._pending),
                    extra={"max_pending": self._settings.max_pending},
                )
            return
        self._pending.append(row)
        self.pending.inc()
        if len(self._pending) >= self._settings.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call-recorder")

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stops the writer, then writes what is pending (for at most `grace_seconds`)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, grace_seconds)
        left = len(self._pending)
        if left:
            self.dropped.labels("shutdown").inc(left)
            self.pending.dec(left)
            self._pending.clear()
            log.error("%d call records could not be written before shutdown", left, extra={"dropped": left})

    async def flush(self) -> bool:
        """Writes every pending row, batch by batch; False if the store failed (rows kept)."""
        while self._pending:
            batch = [self._pending[i] for i in range(min(self._settings.batch_size, len(self._pending)))]
            try:
                await self._store.insert_calls([_stored(row) for row in batch])
            except _REJECTED as exc:
                log.error(
                    "call records rejected by the store: %s", type(exc).__name__, extra={"rows": len(batch)}
                )
                self.dropped.labels("rejected").inc(len(batch))
            except Exception as exc:
                self.write_errors.inc()
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning(
                        "cannot write call records (kept, retrying): %s: %s",
                        type(exc).__name__,
                        exc,
                        extra={"pending": len(self._pending)},
                    )
                return False
            else:
                self.written.inc(len(batch))
                if self._failing_since is not None:
                    log.info(
                        "writing call records again",
                        extra={"outage_seconds": round(time.monotonic() - self._failing_since, 1)},
                    )
                    self._failing_since = None
            for _ in batch:
                self._pending.popleft()
            self.pending.dec(len(batch))
            self._warned_full = False
        return True

    async def prune(self) -> int:
        """Deletes the calls older than the retention period; the number deleted."""
        if not self._settings.retention_days:
            return 0
        cutoff = _utcnow() - datetime.timedelta(days=self._settings.retention_days)
        return await self._store.delete_calls_before(cutoff)

    async def _run(self) -> None:
        retry_delay = _RETRY_FIRST
        next_prune = 0.0
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.flush_seconds)
            self._wake.clear()
            if await self.flush():
                retry_delay = _RETRY_FIRST
            elif self._closing:
                # Draining against a store that is down: try again until close() gives up.
                await asyncio.sleep(min(retry_delay, 1.0))
                continue
            else:
                await asyncio.sleep(retry_delay)
                retry_delay = min(retry_delay * 2, _RETRY_CAP)
                continue
            if self._closing:
                return
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + _RETENTION_EVERY_SECONDS
                try:
                    deleted = await self.prune()
                except Exception as exc:
                    log.warning("retention: cannot delete old call records: %s: %s", type(exc).__name__, exc)
                else:
                    if deleted:
                        log.info(
                            "retention: deleted %d old call records", deleted, extra={"deleted": deleted}
                        )


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """A queued row as the table takes it: the start time (epoch seconds, kept as a
    float on the hot path) as a UTC datetime."""
    stored = dict(row)
    stored["time"] = datetime.datetime.fromtimestamp(row["time"], datetime.UTC).replace(tzinfo=None)
    return stored


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
