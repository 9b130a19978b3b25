"""Fixtures shared by every test folder: real processes on real sockets."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from aigc.v1 import aigc_service_pb2_grpc
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.processes import ServerProcess, running_server


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One real `python -m server` with the built-in local model, for the session."""
    with running_server() as process:
        yield process


@pytest.fixture(scope="session")
def stub(server: ServerProcess) -> Iterator[aigc_service_pb2_grpc.AigcServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield aigc_service_pb2_grpc.AigcServiceStub(channel)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session (`make postgres`); tests take a fresh database each."""
    with running_postgres() as server:
        yield server
