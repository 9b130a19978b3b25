"""Engine.embed on its own: batches in order, retries per batch, and what the key is charged."""

from __future__ import annotations

import pytest

from aigc.v1 import embedding_pb2, model_pb2
from server.core.engine import Call, Engine
from server.errors import UpstreamError, UpstreamFailure
from server.observability import Observability
from server.providers.embeddings import EmbeddingRequest, Embeddings
from server.routing import ModelRoute, Router
from tests.fakes.scripted import ScriptedProvider


class Embedder(ScriptedProvider):
    """Two texts per call; each vector is [len(text)]; each call reports 1 token per text.
    `failures` are raised, in order, by the calls they are listed for (by call number)."""

    max_embedding_inputs = 2

    def __init__(self, failures: dict[int, UpstreamError] | None = None, max_retries: int = 0) -> None:
        super().__init__()
        self.failures = dict(failures or {})
        self.max_retries = max_retries
        self.batches: list[list[str]] = []

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        self.batches.append(list(request.inputs))
        failure = self.failures.pop(len(self.batches), None)
        if failure is not None:
            raise failure
        return Embeddings([[float(len(t))] for t in request.inputs], prompt_tokens=len(request.inputs))


class Ticket:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def release(self, used: int | None) -> None:
        self.gate.released.append(used)


class Gate:
    """The engine's gate, recording what each call is charged."""

    def __init__(self) -> None:
        self.reserved: list[int] = []
        self.released: list[int | None] = []

    def check_model(self, key, route, requested) -> None:
        pass

    async def admit(self, key, *, reserve_tokens: int, stream: bool) -> Ticket:
        self.reserved.append(reserve_tokens)
        return Ticket(self)


def engine(provider: Embedder, gate: Gate) -> Engine:
    route = ModelRoute("e", provider, "up-e", capabilities=frozenset({model_pb2.CAPABILITY_EMBEDDINGS}))
    return Engine(Router([route], "e"), gate=gate)  # type: ignore[arg-type]


def call() -> Call:
    return Call("rid", Observability().rpc("Embed", "rid", streaming=False))


def request(*texts: str) -> embedding_pb2.EmbedRequest:
    return embedding_pb2.EmbedRequest(inputs=texts)


async def test_batches_in_order_and_usage_summed():
    provider, gate = Embedder(), Gate()
    answer = await engine(provider, gate).embed(request("a", "bb", "ccc", "dddd", "eeeee"), call())
    assert provider.batches == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    assert answer.vectors == [[1.0], [2.0], [3.0], [4.0], [5.0]]
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (5, 5)
    assert (answer.model, answer.provider) == ("e", provider.name)
    assert gate.released == [5]


async def test_a_retryable_failure_is_retried_for_its_batch_only():
    failure = UpstreamError(UpstreamFailure.SERVER_ERROR, "503", provider="p", retry_after_seconds=0.0)
    provider, gate = Embedder({2: failure}, max_retries=1), Gate()
    record = call()
    answer = await engine(provider, gate).embed(request("a", "b", "c"), record)
    assert provider.batches == [["a", "b"], ["c"], ["c"]]
    assert answer.vectors == [[1.0], [1.0], [1.0]]
    assert record.record.retries == 1


async def test_a_failure_half_way_is_charged_the_finished_batches_and_nothing_more():
    failure = UpstreamError(UpstreamFailure.BAD_REQUEST, "no", provider="p")
    provider, gate = Embedder({2: failure}), Gate()
    with pytest.raises(UpstreamError):
        await engine(provider, gate).embed(request("a", "b", "c", "d"), call())
    assert provider.batches == [["a", "b"], ["c", "d"]], "no retry of a bad request"
    assert gate.released == [2], "the first batch's two tokens"


async def test_a_first_failure_refunds_the_reservation():
    provider, gate = Embedder({1: UpstreamError(UpstreamFailure.BAD_REQUEST, "no", provider="p")}), Gate()
    with pytest.raises(UpstreamError):
        await engine(provider, gate).embed(request("x" * 40), call())
    assert gate.reserved == [10] and gate.released == [0]
