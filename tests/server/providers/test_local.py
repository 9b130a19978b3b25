"""The local provider against the real llama.cpp server (xllamacpp) and SmolLM2.

Through the whole server, tests/server/api covers JSON schema and tool calls
on four transports; here the provider itself: usage, raw completion, the
slot freed when a stream is closed, its llama.cpp-specific request shaping,
and that it never uses a proxy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from aigc.v1 import generation_pb2
from server.config import Settings
from server.core.fold import Folder
from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import ProviderRequest
from server.providers.local import LocalProvider
from server.providers.openai import OpenAICompatProvider
from tests.conformance.requests import WEATHER, chat, user
from tests.proxies.relays import HttpProxy

F = generation_pb2
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(scope="module")
async def llama() -> AsyncIterator[LocalProvider]:
    local = LocalProvider(Settings.from_env({}).local)
    await asyncio.wait_for(local.start(), 120)
    try:
        yield local
    finally:
        await local.close()


def short(text: str = "Say hello.", **fields) -> ProviderRequest:
    request = chat(
        user(text), generation_config={"max_output_tokens": 8, "temperature": 0, "seed": 1}, **fields
    )
    return ProviderRequest("smollm2", chat=request, config=request.generation_config)


async def fold(provider, request: ProviderRequest) -> Folder:
    folder = Folder()
    async with asyncio.timeout(60), provider.stream(request) as chunks:
        async for chunk in chunks:
            folder.add(chunk)
    return folder


async def test_stream_chat_with_usage(llama):
    folder = await fold(llama, short())
    assert folder.text()
    assert folder.finish in (F.FINISH_REASON_STOP, F.FINISH_REASON_MAX_TOKENS)
    assert folder.usage.prompt_tokens > 0 and 0 < folder.usage.completion_tokens <= 8


async def test_raw_completion(llama):
    request = ProviderRequest(
        "smollm2",
        prompt="Once upon a time",
        config=generation_pb2.GenerationConfig(max_output_tokens=5, temperature=0),
    )
    folder = await fold(llama, request)
    assert folder.usage.completion_tokens == 5
    assert folder.finish == F.FINISH_REASON_MAX_TOKENS


async def test_required_tool_choice_is_forced_with_a_prefill(llama):
    request = short("What is the weather in Paris?", tools=[WEATHER], tool_choice={"mode": "MODE_REQUIRED"})
    request.config.max_output_tokens = 60
    body = llama.chat_body(request)
    assert body["messages"][-1] == {"role": "assistant", "content": "<tool_call>\n"}
    folder = await fold(llama, request)
    assert folder.finish == F.FINISH_REASON_TOOL_CALLS
    (call, *_) = [p.tool_call for p in folder.parts()]
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)


async def test_a_named_function_is_sent_as_the_only_tool(llama):
    time_tool = {"function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    request = short("Time?", tools=[WEATHER, time_tool], tool_choice={"function_name": "get_time"})
    body = llama.chat_body(request)
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]
    assert body["tool_choice"] == "required"


async def test_auto_tool_choice_is_passed_as_is(llama):
    body = llama.chat_body(short("hi", tools=[WEATHER]))
    assert "tool_choice" not in body and body["messages"][-1]["role"] == "user"


async def test_wrong_key_is_authentication(llama):
    wrong = OpenAICompatProvider(
        "llama", base_url=f"{llama.address}/v1", api_key="wrong-key-123", max_retries=0
    )
    await wrong.start()
    with pytest.raises(UpstreamError) as caught:
        await fold(wrong, short())
    await wrong.close()
    assert caught.value.failure is UpstreamFailure.AUTHENTICATION
    assert "wrong-key-123" not in caught.value.message


async def test_closing_the_stream_frees_the_slot(llama):
    request = short("Count to one hundred.")
    request.config.max_output_tokens = 400
    async with llama.stream(request) as chunks:
        await asyncio.wait_for(anext(chunks), 60)
    # llama.cpp stops decoding once it notices the closed connection.
    async with asyncio.timeout(10):
        while await llama.busy_slots():  # noqa: ASYNC110 - polling llama.cpp's /slots, no event to wait on
            await asyncio.sleep(0.05)


async def test_local_provider_ignores_proxy_variables_without_no_proxy(monkeypatch):
    """Proven at the provider level, without the loopback NO_PROXY that server/routing.py
    adds (tests/server/test_proxies.py proves it through the whole server)."""
    proxy = HttpProxy()
    await proxy.start()
    for var in _PROXY_VARS:
        monkeypatch.setenv(var, proxy.url)
        monkeypatch.setenv(var.lower(), proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    local = LocalProvider(Settings.from_env({}).local)
    try:
        await asyncio.wait_for(local.start(), 120)
        assert (await fold(local, short())).text()
        assert await local.busy_slots() == 0
        assert proxy.relayed == [] and proxy.refused == 0
        # Control: in this very environment a client that trusts it does use the proxy.
        control = OpenAICompatProvider(
            "control", base_url=f"{local.address}/v1", api_key="unused", max_retries=0
        )
        await control.start()
        with pytest.raises(UpstreamError) as caught:  # the key is wrong; only the path matters
            await fold(control, short())
        await control.close()
        assert caught.value.failure is UpstreamFailure.AUTHENTICATION
        assert proxy.relayed == [local.address.removeprefix("http://")]
    finally:
        await local.close()
        await proxy.stop()
