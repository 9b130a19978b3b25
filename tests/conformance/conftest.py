"""The conformance suite: one behaviour, asserted for every provider against its fake.

Each test takes `vendor` (parametrised over tests/conformance/vendors/*) and
`harness`, which runs a request through the real core - validation, the
provider, its HTTP client, retries, folding - against the vendor's fake
server, as unary and as stream. Only the gRPC layer is left out (tests/e2e
covers the four transports).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import pkgutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2
from server.core.engine import Call, Engine
from server.observability import Observability
from server.providers.base import ALL_CAPABILITIES
from server.routing import ModelRoute, Router
from tests.conformance import vendors
from tests.conformance.vendor import Vendor
from tests.fakes.http import FakeServer
from tests.support.content import fold_deltas

VENDORS = sorted(m.name for m in pkgutil.iter_modules(vendors.__path__))
UPSTREAM_MODEL = "model-1"


@pytest.fixture(params=VENDORS)
def vendor(request: pytest.FixtureRequest) -> Vendor:
    return importlib.import_module(f"tests.conformance.vendors.{request.param}").VENDOR


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with FakeServer() as server:
        yield server


@dataclasses.dataclass
class Result:
    """What a caller got: the stream's deltas and the folded answer."""

    deltas: list[list[content_pb2.Part]]
    parts: list[content_pb2.Part]
    finish: int
    usage: generation_pb2.Usage | None

    def texts(self) -> list[str]:
        return [p.text for p in self.parts if p.WhichOneof("data") == "text"]

    def calls(self) -> list[content_pb2.ToolCall]:
        return [p.tool_call for p in self.parts if p.WhichOneof("data") == "tool_call"]

    def kinds(self) -> list[str]:
        return [p.WhichOneof("data") for p in self.parts]


class Harness:
    def __init__(self, vendor: Vendor, fake: FakeServer) -> None:
        self.vendor = vendor
        self.fake = fake

    def engine(self, **provider_options: Any) -> Engine:
        provider = self.vendor.provider(self.fake.base_url, **provider_options)
        route = ModelRoute("m", provider, UPSTREAM_MODEL, capabilities=ALL_CAPABILITIES)
        return Engine(Router([route], "m"))

    async def stream(
        self,
        request: aigc_service_pb2.ChatRequest,
        *,
        caller_timeout: float | None = None,
        **provider_options: Any,
    ) -> Result:
        engine = self.engine(**provider_options)
        provider = engine.router.default.provider
        await provider.start()
        try:
            deltas = []
            async with engine.stream(request, _call("StreamChat", caller_timeout)) as stream:
                async for parts in stream:
                    deltas.append(list(parts))
            folded = fold_deltas(deltas)
            return Result(deltas, folded, stream.finish, stream.usage)
        finally:
            await provider.close()

    async def unary(
        self,
        request: aigc_service_pb2.ChatRequest,
        *,
        caller_timeout: float | None = None,
        **provider_options: Any,
    ) -> Result:
        engine = self.engine(**provider_options)
        provider = engine.router.default.provider
        await provider.start()
        try:
            answer = await engine.generate(request, _call("Chat", caller_timeout))
            return Result([], answer.parts, answer.finish, answer.usage)
        finally:
            await provider.close()


@pytest.fixture
def harness(vendor: Vendor, fake: FakeServer) -> Harness:
    return Harness(vendor, fake)


def _call(method: str, caller_timeout: float | None = None) -> Call:
    deadline = None if caller_timeout is None else asyncio.get_running_loop().time() + caller_timeout
    return Call(
        "rid-1", Observability().rpc(method, "rid-1", streaming=method.startswith("Stream")), deadline
    )
