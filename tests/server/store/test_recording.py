"""The real server records every generation call - on both databases - and a
SIGTERM writes the records still in memory before the process exits."""

from __future__ import annotations

import asyncio
import signal

import grpc
import httpx

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from server.store import Store, StoreSettings
from tests.support.processes import running_server

PRICE = '[prices.smollm2]\ncurrency = "USD"\ninput = 1\noutput = 2\n'
REQUEST = pb.ChatRequest(
    messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Say hi.")],
    generation_config=generation_pb2.GenerationConfig(max_output_tokens=4, temperature=0),
)


def test_sigterm_writes_every_call_record_before_exiting(store_env, tmp_path):
    config = tmp_path / "aigc.toml"
    config.write_text(PRICE)
    # The writer would wait an hour: only the drain can write these rows.
    env = {**store_env, "AIGC_CONFIG": str(config), "AIGC_RECORD_FLUSH_SECONDS": "3600"}
    with running_server(env) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
            unary = stub.Chat(REQUEST, metadata=(("x-request-id", "rec-unary"),), timeout=60)
            last = list(stub.StreamChat(REQUEST, metadata=(("x-request-id", "rec-stream"),), timeout=60))[-1]
            missing = pb.ChatRequest(model="no-such-model'; DROP TABLE calls; --", messages=REQUEST.messages)
            try:
                stub.Chat(missing, metadata=(("x-request-id", "rec-missing"),), timeout=60)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
            stub.ListModels(pb.ListModelsRequest(), timeout=10)  # not a generation: no record
        reply = httpx.post(
            f"http://{server.openai_address}/openai/v1/chat/completions",
            json={"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4},
            headers={"x-request-id": "rec-openai"},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert server.stop(signal.SIGTERM) == 0, server.output()

    rows = {row["request_id"]: row for row in asyncio.run(_calls(StoreSettings.from_env(store_env)))}
    assert set(rows) == {"rec-unary", "rec-stream", "rec-missing", "rec-openai"}

    row = rows["rec-unary"]
    assert (row["method"], row["surface"], row["status"], row["reason"]) == ("Chat", "grpc", "OK", None)
    assert (row["model"], row["provider"]) == ("smollm2", "local")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        unary.usage.prompt_tokens,
        unary.usage.completion_tokens,
    )
    assert (row["cost_nanos"], row["currency"]) == (unary.usage.cost.nanos, "USD")
    assert row["latency_ms"] > 0 and row["ttft_ms"] > 0
    assert row["retries"] == 0 and row["fallbacks"] == "" and not row["cancelled"]

    row = rows["rec-stream"]
    assert (row["method"], row["status"], row["cost_nanos"]) == ("StreamChat", "OK", last.usage.cost.nanos)

    row = rows["rec-missing"]
    assert (row["status"], row["reason"], row["provider"]) == ("NOT_FOUND", "MODEL_NOT_FOUND", "")
    assert row["model"] == missing.model
    assert row["prompt_tokens"] is None and row["cost_nanos"] is None  # nothing reported: nothing invented

    row = rows["rec-openai"]
    assert (row["surface"], row["status"], row["model"]) == ("openai", "OK", "smollm2")
    assert row["cost_nanos"] == row["prompt_tokens"] * 1000 + row["completion_tokens"] * 2000


async def _calls(settings: StoreSettings) -> list[dict]:
    store = await Store.open(settings)
    try:
        return await store.list_calls(limit=100)
    finally:
        await store.close()
