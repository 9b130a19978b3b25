"""Fixtures of tests/gateway: one fake gRPC server and one Envoy per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.harness import (
    FakeAigc,
    Gateway,
    Types,
    find_descriptor,
    render_gateway,
    run_envoy,
    serve_fake,
)


@pytest.fixture(scope="module")
def descriptor_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return find_descriptor(tmp_path_factory)


@pytest.fixture(scope="module")
def types(descriptor_path: Path) -> Types:
    return Types.load(descriptor_path)


@pytest.fixture(scope="module")
def grpc_server(types: Types) -> Iterator[tuple[FakeAigc, int]]:
    """The fake AigcService on its own event loop in a thread; yields (fake, port)."""
    fake = FakeAigc(types)
    with serve_fake(fake) as port:
        yield fake, port


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, descriptor_path: Path, grpc_server: tuple[FakeAigc, int]
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    with run_envoy(render_gateway(tmp, descriptor_path, grpc_server[1]), tmp / "envoy.log") as gw:
        yield gw


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        yield client
