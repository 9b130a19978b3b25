"""Caller keys created at runtime, and the key ring that joins them to the config's.

    keys = CallerKeys(config_ring, store, refresh_seconds=2)
    await keys.start()          # loads the created keys, then reloads them every 2 s
    keys.authenticate(metadata) # what Gate.authenticate calls: config keys, then created ones

A created key is stored as the SHA-256 of its secret (the secret is shown once,
in CreateKey's answer). Every replica reloads the table every
AIGC_KEYS_REFRESH_SECONDS (default 2), so a created, changed or revoked key
takes effect everywhere within that; the replica that made the change reloads
at once. If the database cannot be read, the last keys read stay in force and
a warning is logged.

`CallerKeys` has the KeyRing interface (`enabled`, `keys`, `authenticate`),
so the gate, the reflection guard and the OpenAI door use it unchanged.
Created keys count only while authentication is on (AIGC_AUTH): with it off
nobody needs a key, and CreateKey says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hmac
import json
import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from server.access.keys import CallerKey, KeyRing, Unauthenticated, bearer_token, digest_of
from server.store import Store
from server.store.schema import api_keys

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RuntimeKey:
    id: str
    digest: bytes = dataclasses.field(repr=False)
    models: frozenset[str] | None
    disabled: bool
    expire_time: datetime.datetime | None  # naive UTC
    create_time: datetime.datetime
    update_time: datetime.datetime

    @property
    def caller(self) -> CallerKey:
        return CallerKey(name=self.id, digest=self.digest, models=self.models)

    def usable(self, now: datetime.datetime) -> bool:
        return not self.disabled and (self.expire_time is None or now < self.expire_time)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class CallerKeys:
    def __init__(self, config: KeyRing, store: Store | None, *, refresh_seconds: float = 2.0) -> None:
        self.config = config
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._runtime: tuple[RuntimeKey, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def local_without_key(self) -> bool:
        """AIGC_AUTH=auto with no keys configured: callers on this machine need none."""
        return self.config.local_without_key

    @property
    def keys(self) -> tuple[CallerKey, ...]:
        now = utcnow()
        return (*self.config.keys, *(key.caller for key in self._runtime if key.usable(now)))

    @property
    def runtime(self) -> tuple[RuntimeKey, ...]:
        return self._runtime

    def authenticate(self, metadata: Iterable[tuple[str, Any]], *, local: bool = False) -> CallerKey | None:
        """As KeyRing.authenticate, over the config's keys and the usable created ones."""
        if not self.enabled or (local and self.local_without_key):
            return None
        metadata = tuple(metadata)
        token = bearer_token(metadata)
        if token is None:
            # The config's ring says what to do (its message knows the generated key's file).
            return self.config.authenticate(metadata, local=local)
        presented = digest_of(token)
        found: CallerKey | None = None
        for key in self.config.keys:  # every key compared, in constant time: no early exit
            if hmac.compare_digest(key.digest, presented):
                found = key
        now = utcnow()
        for runtime in self._runtime:
            if hmac.compare_digest(runtime.digest, presented) and runtime.usable(now):
                found = runtime.caller
        if found is None:
            raise Unauthenticated("API_KEY_INVALID", "the API key is not valid")
        return found

    async def start(self) -> None:
        if self._store is None:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="caller-keys-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        """Reloads the created keys from the store."""
        assert self._store is not None
        async with self._store.connect() as conn:
            rows = (await conn.execute(sa.select(api_keys).order_by(api_keys.c.id))).all()
        self._runtime = tuple(runtime_key(dict(row._mapping)) for row in rows)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:
                if not self._failing:
                    log.warning(
                        "cannot reload caller keys (the last ones read stay in force): %s", type(exc).__name__
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("reloading caller keys again")
                self._failing = False


def runtime_key(row: dict[str, Any]) -> RuntimeKey:
    return RuntimeKey(
        id=row["id"],
        digest=bytes.fromhex(row["sha256"]),
        models=frozenset(json.loads(row["models"])) if row["models"] is not None else None,
        disabled=row["disabled"],
        expire_time=row["expire_time"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def insert_key(
    store: Store,
    key_id: str,
    digest: bytes,
    models: list[str] | None,
    disabled: bool,
    expire_time: datetime.datetime | None,
) -> RuntimeKey:
    now = utcnow()
    row = {
        "id": key_id,
        "sha256": digest.hex(),
        "models": json.dumps(models) if models else None,
        "disabled": disabled,
        "expire_time": expire_time,
        "create_time": now,
        "update_time": now,
    }
    async with store.engine.begin() as conn:
        await conn.execute(api_keys.insert(), [row])
    return runtime_key(row)


async def select_key(store: Store, key_id: str) -> RuntimeKey | None:
    async with store.connect() as conn:
        row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
    return runtime_key(dict(row._mapping)) if row is not None else None


async def update_key(store: Store, key_id: str, changes: dict[str, Any]) -> RuntimeKey | None:
    values = dict(changes)
    if "models" in values:
        values["models"] = json.dumps(values["models"]) if values["models"] else None
    values["update_time"] = utcnow()
    async with store.engine.begin() as conn:
        result = await conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**values))
        if not result.rowcount:
            return None
    return await select_key(store, key_id)


async def delete_key(store: Store, key_id: str) -> bool:
    async with store.engine.begin() as conn:
        result = await conn.execute(api_keys.delete().where(api_keys.c.id == key_id))
        return bool(result.rowcount)
