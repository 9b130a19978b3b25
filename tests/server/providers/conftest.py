"""Fixtures for provider tests: a fresh fake vendor server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.http import FakeServer


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with FakeServer() as server:
        yield server
