"""Every store test runs twice: on SQLite in a temp data dir, and on a real PostgreSQL."""

from __future__ import annotations

import pytest

from server.store import StoreSettings


@pytest.fixture(params=["sqlite", "postgresql"])
def store_env(request, tmp_path) -> dict[str, str]:
    """The environment of a server (or Store) on a fresh, empty database of each kind."""
    env = {"AIGC_DATA_DIR": str(tmp_path / "data")}
    if request.param == "postgresql":
        env["AIGC_DATABASE_URL"] = request.getfixturevalue("postgres").create_database()
    return env


@pytest.fixture
def store_settings(store_env) -> StoreSettings:
    return StoreSettings.from_env(store_env)
