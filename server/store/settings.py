"""Where the store lives and how calls are recorded: read once from the environment.

AIGC_DATA_DIR              the data directory (default `.aigc` under the working
                           directory; the image uses /data): the SQLite file
                           `aigc.db` lives here when no database URL is set
AIGC_DATABASE_URL          PostgreSQL instead, for several replicas or machines:
                           postgresql://user:password@host:5432/dbname
AIGC_RECORD_CALLS          record every call (default true); false: no store at all
AIGC_RECORD_BATCH_SIZE     rows per INSERT (default 500)
AIGC_RECORD_FLUSH_SECONDS  the longest a finished call waits to be written (default 1)
AIGC_RECORD_MAX_PENDING    rows kept in memory while the database is slow or down
                           (default 10000); beyond it new rows are dropped and counted
AIGC_CALL_RETENTION_DAYS   delete recorded calls older than this (default 90; 0 keeps all)
AIGC_KEYS_REFRESH_SECONDS  how often each replica reloads the keys created through the
                           admin API (default 2)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from server.envvars import ConfigError, parse_bool, setting

SQLITE_FILE = "aigc.db"


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    # The data directory (AIGC_DATA_DIR, absolute): the SQLite file when no URL is set,
    # and the generated caller key (server/access/caller_key.py), shared by workers and replicas.
    data_dir: pathlib.Path
    # The PostgreSQL URL as given ("" = SQLite in data_dir). May hold a password: never logged.
    database_url: str = dataclasses.field(default="", repr=False)
    record_calls: bool = True
    batch_size: int = 500
    flush_seconds: float = 1.0
    max_pending: int = 10_000
    retention_days: float = 90.0
    keys_refresh_seconds: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreSettings:
        env = os.environ if env is None else env
        database_url = _database_url(env)
        return cls(
            data_dir=setting(env, "AIGC_DATA_DIR", pathlib.Path(".aigc"), pathlib.Path).absolute(),
            database_url=database_url,
            record_calls=setting(env, "AIGC_RECORD_CALLS", True, parse_bool),
            batch_size=setting(env, "AIGC_RECORD_BATCH_SIZE", 500, _positive_int),
            flush_seconds=setting(env, "AIGC_RECORD_FLUSH_SECONDS", 1.0, _positive_float),
            max_pending=setting(env, "AIGC_RECORD_MAX_PENDING", 10_000, _positive_int),
            retention_days=setting(env, "AIGC_CALL_RETENTION_DAYS", 90.0, _non_negative_float),
            keys_refresh_seconds=setting(env, "AIGC_KEYS_REFRESH_SECONDS", 2.0, _positive_float),
        )

    @property
    def url(self) -> URL:
        """The SQLAlchemy URL with its async driver: asyncpg, or aiosqlite on the data dir's file."""
        if self.database_url:
            return _postgres_url_object(self.database_url)
        return URL.create("sqlite+aiosqlite", database=str(self.data_dir / SQLITE_FILE))

    @property
    def kind(self) -> str:
        return "postgresql" if self.database_url else "sqlite"


def _database_url(env: Mapping[str, str]) -> str:
    """AIGC_DATABASE_URL, checked. Not through `setting`: its message would repeat
    the value, and a database URL holds a password."""
    raw = env.get("AIGC_DATABASE_URL", "").strip()
    if raw:
        try:
            _postgres_url_object(raw)
        except ValueError as exc:
            raise ConfigError(f"AIGC_DATABASE_URL (value not shown: it may hold a password): {exc}") from None
    return raw


def _postgres_url_object(raw: str) -> URL:
    # The message never repeats the value: it may hold a password.
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError("expected postgresql://user:password@host:port/dbname") from None
    if url.drivername not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError("expected a postgresql:// URL (SQLite needs none: it lives in AIGC_DATA_DIR)")
    if not url.database:
        raise ValueError("expected a database name: postgresql://user:password@host:port/dbname")
    return url.set(drivername="postgresql+asyncpg")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a number of seconds above 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("expected a number of days, 0 or more")
    return value
