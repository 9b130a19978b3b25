"""The built-in model's slots: one pool for the one llama.cpp server, whatever the worker count.

    gate = SlotGate(slots=4, folder=settings.slots_dir)   # folder "" : this process only
    async with gate.hold(wait_seconds):                    # TimeoutError when none frees in time
        ...                                                # talk to llama.cpp

Beyond its slots llama.cpp queues requests itself, unseen and unbounded (20
streams on 4 slots once waited 35 s), so we let at most `slots` requests at
it and make the rest wait here, at most AIGC_LOCAL_QUEUE_TIMEOUT_SECONDS.

With several workers (server/supervisor.py runs the model once for all of
them) the pool must be shared: splitting it per worker refused 18 of 20
streams as "all 4 slots busy" while llama.cpp had 2 busy. Shared here means
one lock file per slot in a folder the supervisor gives every worker
(AIGC_LOCAL_SLOTS_DIR), held with flock(2) for the length of the request.
Why files and not the supervisor's redis-server or llama.cpp's own queue:
- the kernel releases a dead worker's locks at once - no lease to expire, no
  heartbeat, nothing to clean up;
- it needs no other process: the private redis-server runs only when keys
  have quotas;
- llama.cpp's queue cannot be bounded in time: a request waiting in it and
  one whose prompt is being read look the same from outside.
Within one process an asyncio.Semaphore queues waiters in order; across
processes a waiter tries the slot files again every POLL_SECONDS, so the
order between workers is not strictly first come, first served.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
from collections.abc import AsyncIterator

# How often a waiter looks for a slot another worker freed.
POLL_SECONDS = 0.02


class SlotGate:
    def __init__(self, slots: int, folder: str = "") -> None:
        self.slots = max(1, slots)
        self._local = asyncio.Semaphore(self.slots)
        self._folder = folder
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)

    @contextlib.asynccontextmanager
    async def hold(self, wait_seconds: float) -> AsyncIterator[None]:
        """One slot for the block; raises TimeoutError if none is free within `wait_seconds`."""
        fd = -1
        async with asyncio.timeout(wait_seconds):
            await self._local.acquire()
            try:
                if self._folder:
                    fd = await self._lock_a_slot()
            except BaseException:
                self._local.release()
                raise
        try:
            yield
        finally:
            if fd >= 0:
                os.close(fd)  # closing the file releases its lock
            self._local.release()

    async def _lock_a_slot(self) -> int:
        while True:
            fd = self._try_each_slot()
            if fd >= 0:
                return fd
            await asyncio.sleep(POLL_SECONDS)

    def _try_each_slot(self) -> int:
        # A fresh open file per try: flock locks belong to an open file, so two
        # requests of one process sharing a descriptor would both "hold" it.
        start = random.randrange(self.slots)  # spread the workers over the files
        for i in range(self.slots):
            path = os.path.join(self._folder, f"slot-{(start + i) % self.slots}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return fd
        return -1


__all__ = ["POLL_SECONDS", "SlotGate"]
