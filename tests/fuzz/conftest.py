"""One real stack (server with the local model + Envoy) for tests/fuzz' pytest tests.

The schemathesis run itself (`make fuzz`, run_fuzz.py) is not a pytest test:
`make test` runs only the fast hand-written cases of test_hostile_inputs.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fuzz.env import fuzz_env
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    with running_stack(fuzz_env()) as running:
        yield running


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http, timeout=60) as client:
        yield client
