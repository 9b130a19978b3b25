"""Reasoning of earlier turns, sent back where the vendor needs it (a preset flag).

DeepSeek's thinking mode answers 400 when an assistant turn that called tools
comes back without its `reasoning_content`; OpenAI itself has no such field.
The deepseek preset is built from the catalog as the server builds it, and
talks to a fake that refuses what DeepSeek refuses (tests/fakes/openai_fake.py
`as_deepseek_thinking`)."""

from __future__ import annotations

import asyncio

import pytest

from server.config import Settings
from server.core.engine import Call, Engine
from server.envvars import ConfigError
from server.observability import Observability
from server.providers.base import ProviderRequest
from server.providers.openai import wire
from server.routing import build_router
from tests.conformance.requests import WEATHER, chat, user
from tests.fakes import KEY
from tests.fakes import openai_fake as oa
from tests.proxies.env import isolated_env, write_config


def tool_turn_two(model: str):
    """The second request of a tool loop: the thinking turn that called the tool, and its result."""
    return chat(
        user("Weather in Paris?"),
        {
            "role": "ROLE_ASSISTANT",
            "parts": [
                {"reasoning": {"text": "I should call get_weather."}},
                {"tool_call": {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}},
            ],
        },
        {"role": "ROLE_TOOL", "parts": [{"tool_result": {"tool_call_id": "call_1", "content": "18C"}}]},
        model=model,
        tools=[WEATHER],
        reasoning={"include_reasoning": True},
    )


async def generate(env: dict[str, str], request):
    router = build_router(Settings.from_env(isolated_env(**env)), environ={})
    engine = Engine(router)
    provider = router.resolve(request.model).provider
    await provider.start()
    try:
        call = Call(
            "rid-1",
            Observability().rpc("Chat", "rid-1", streaming=False),
            asyncio.get_running_loop().time() + 20,
        )
        return await engine.generate(request, call)
    finally:
        await provider.close()


async def test_a_deepseek_tool_loop_sends_the_reasoning_back(fake):
    fake.script(oa.as_deepseek_thinking(oa.chat("18°C in Paris.")))
    env = {"DEEPSEEK_API_KEY": KEY, "DEEPSEEK_BASE_URL": fake.base_url, "AIGC_PRESETS": "deepseek"}
    answer = await generate(env, tool_turn_two("deepseek-reasoner"))
    assert [p.text for p in answer.parts if p.WhichOneof("data") == "text"] == ["18°C in Paris."]
    assistant = fake.requests[0].json()["messages"][1]
    assert assistant["reasoning_content"] == "I should call get_weather."
    assert assistant["tool_calls"][0]["id"] == "call_1"


async def test_openai_gets_no_reasoning_content(fake):
    fake.script(oa.chat("18°C in Paris."))
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url, "AIGC_PRESETS": "openai"}
    await generate(env, tool_turn_two("o4-mini"))
    assert "reasoning_content" not in fake.requests[0].json()["messages"][1]


@pytest.mark.parametrize("flag", [False, True])
def test_the_wire_sends_reasoning_back_only_when_told(flag):
    request = tool_turn_two("m")
    body = wire.chat_body(
        ProviderRequest("m", chat=request, config=request.generation_config), reasoning_in_history=flag
    )
    assert ("reasoning_content" in body["messages"][1]) is flag


def test_the_flag_is_a_config_key_of_openai_kind_upstreams(tmp_path):
    config = write_config(
        tmp_path,
        """
        [upstreams.deepseek]
        reasoning_in_history = false

        [upstreams.moonshot]
        reasoning_in_history = true
        """,
    )
    env = isolated_env(AIGC_CONFIG=config, DEEPSEEK_API_KEY=KEY, MOONSHOT_API_KEY=KEY)
    router = build_router(Settings.from_env(env), environ={})
    assert not router.resolve("deepseek-reasoner").provider.inner.reasoning_in_history
    assert router.resolve("kimi").provider.inner.reasoning_in_history
    bad = write_config(tmp_path, "[upstreams.gemini]\nreasoning_in_history = true\n", name="bad.toml")
    with pytest.raises(ConfigError, match='reasoning_in_history applies to kind = "openai" only'):
        Settings.from_env(isolated_env(AIGC_CONFIG=bad))
