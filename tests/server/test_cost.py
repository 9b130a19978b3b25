"""Every response and every stream's last message says what the call cost, from
the usage the provider reported and the model's price - the real server, the
real local model, a price for it in the config file."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.type import money_pb2

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from tests.support.processes import running_server

# 1 USD per million input tokens, 2 per million output tokens: 1000 and 2000 nano-dollars a token.
CONFIG = """
[prices.smollm2]
currency = "USD"
input = 1
output = 2
"""
REQUEST = pb.ChatRequest(
    messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Say hi.")],
    generation_config=generation_pb2.GenerationConfig(max_output_tokens=5, temperature=0),
)


def expected(usage: generation_pb2.Usage) -> money_pb2.Money:
    return money_pb2.Money(
        currency_code="USD", units=0, nanos=usage.prompt_tokens * 1000 + usage.completion_tokens * 2000
    )


@pytest.fixture(scope="module")
def priced(tmp_path_factory) -> Iterator[aigc_service_pb2_grpc.AigcServiceStub]:
    config = tmp_path_factory.mktemp("cost") / "aigc.toml"
    config.write_text(CONFIG)
    env = {"AIGC_CONFIG": str(config), "AIGC_DATA_DIR": str(config.parent / "data")}
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        yield aigc_service_pb2_grpc.AigcServiceStub(channel)


def test_a_unary_answer_says_what_it_cost(priced):
    response = priced.Chat(REQUEST, timeout=60)
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.HasField("cost")
    assert response.usage.cost == expected(response.usage)


def test_a_stream_s_last_message_says_what_it_cost(priced):
    messages = list(priced.StreamChat(REQUEST, timeout=60))
    last = messages[-1]
    assert last.usage.HasField("cost")
    assert last.usage.cost == expected(last.usage)
    assert not any(m.HasField("usage") for m in messages[:-1])
    # Same request, greedy: the same usage and cost as the unary call.
    assert last.usage == priced.Chat(REQUEST, timeout=60).usage


def test_a_model_without_a_price_has_no_cost(stub):
    """The session server has no price for the local model: no cost, never a made-up 0."""
    response = stub.Chat(REQUEST, timeout=60)
    assert response.usage.total_tokens > 0
    assert not response.usage.HasField("cost")
