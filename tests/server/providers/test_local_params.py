"""What a caller may ask of llama.cpp through vendor_params, and the caller's deadline
reaching it: on the real llama.cpp server (xllamacpp) and SmolLM2.

llama.cpp takes dozens of request fields the typed API does not have; some
cost far more than they look (5,000 `dry_sequence_breakers` kept a core busy
for half a minute before the first token; `n_probs: 100000` made each token
~12x dearer). The local provider takes a bounded allowlist, and whatever the
request, the work stops soon after the caller's deadline: asserted by
polling llama.cpp's own /slots, never by timing the service."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.request
from collections.abc import AsyncIterator

import pytest

from server.config import Settings
from server.core.engine import Call, Engine
from server.errors import InvalidRequest, UpstreamError, UpstreamFailure
from server.observability import Observability
from server.providers.base import ProviderRequest
from server.providers.local import LOCAL_CAPABILITIES, LocalProvider
from server.routing import ModelRoute, Router
from tests.conformance.requests import chat, user
from tests.fakes import openai_fake as oa
from tests.fakes.http import FakeServer

# What made llama.cpp burn CPU (issue 13, point 12), and other fields it
# takes that the service does not offer.
BREAKERS_5000 = {"dry_multiplier": 0.8, "dry_sequence_breakers": [f"w{i}x" for i in range(5000)]}
REFUSED = [
    BREAKERS_5000,
    {"n_probs": 100000},
    {"n_probs": 1},
    {"dry_sequence_breakers": ["x" * 500]},
    {"top_k": 10**9},
    {"min_p": 7},
    {"mirostat": 5},
    {"repeat_last_n": 10**7},
    {"ignore_eos": "yes"},
    {"id_slot": 0},
    {"t_max_predict_ms": 10**9},
    {"lora": [{"id": 0, "scale": 1.0}]},
    {"chat_template_kwargs": {"enable_thinking": True}},
]
ALLOWED = {
    "top_k": 40,
    "min_p": 0.05,
    "typical_p": 1.0,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "dry_multiplier": 0.8,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "dry_penalty_last_n": -1,
    "dry_sequence_breakers": ["\n", ":", '"', "*"],
    "xtc_probability": 0.0,
    "xtc_threshold": 0.1,
    "mirostat": 0,
    "ignore_eos": False,
}


def settings():
    return Settings.from_env({}).local


def request(vendor_params: dict, *, max_tokens: int = 8, text: str = "Say hello.") -> ProviderRequest:
    chat_request = chat(user(text), generation_config={"max_output_tokens": max_tokens, "temperature": 0})
    return ProviderRequest(
        "smollm2", chat=chat_request, config=chat_request.generation_config, vendor_params=vendor_params
    )


@pytest.mark.parametrize("params", REFUSED, ids=lambda p: json.dumps(p)[:40])
def test_vendor_params_outside_the_allowlist_are_refused_naming_the_field(params):
    problems = LocalProvider(settings()).validate(request(params))
    (field,) = [f for f in problems if f != "vendor_params.dry_multiplier"]
    assert field.startswith("vendor_params.") and field.split(".")[1] in params
    assert "w4999x" not in problems[field] and len(problems[field]) < 500, "no value quoted back"


def test_the_allowlist_takes_llama_cpp_sampling_fields_within_bounds():
    assert LocalProvider(settings()).validate(request(ALLOWED)) == {}


@pytest.fixture(scope="module")
async def llama() -> AsyncIterator[LocalProvider]:
    # One slot with a long context: an answer that ignores its end of text can
    # run for ~8,000 tokens (40 s and more on two cores), so "stopped within a
    # few seconds" cannot be mistaken for "ran to its end".
    local = LocalProvider(dataclasses.replace(settings(), parallel=1, context_tokens=8192))
    await asyncio.wait_for(local.start(), 120)
    try:
        yield local
    finally:
        await local.close()


def busy_slots(local: LocalProvider) -> int:
    """llama.cpp's busy slots; one that cannot even answer /slots within 2 s counts as all busy
    (/slots is served by the same loop that decodes)."""
    auth = {"Authorization": f"Bearer {local.api_key}"}
    get = urllib.request.Request(f"{local.address}/slots", headers=auth)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(get, timeout=2) as response:
            return sum(1 for slot in json.load(response) if slot.get("is_processing"))
    except TimeoutError:
        return -1


async def wait_until_idle(local: LocalProvider, within: float) -> None:
    """Returns once no llama.cpp slot is decoding; fails if one still is after `within` seconds
    (a bound on llama.cpp stopping work, far below what the request would have run; typically
    it stops within a second, the margin is for a loaded machine)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    busy = -1
    while loop.time() < end:
        busy = await asyncio.to_thread(busy_slots, local)
        if busy == 0:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"llama.cpp still busy ({busy} slots, -1: not answering) {within}s after the deadline")


async def test_a_costly_request_is_refused_before_llama_cpp_and_nothing_keeps_running(llama):
    route = ModelRoute("local-m", llama, "smollm2", capabilities=LOCAL_CAPABILITIES)
    engine = Engine(Router([route], "local-m"))
    typed = chat(
        user("Tell me a story."),
        model="local-m",
        generation_config={"max_output_tokens": 64, "temperature": 0},
        vendor_params=BREAKERS_5000,
    )
    deadline = asyncio.get_running_loop().time() + 3
    with pytest.raises(InvalidRequest) as caught:
        await engine.generate(
            typed, Call("rid-1", Observability().rpc("Chat", "rid-1", streaming=False), deadline)
        )
    assert "vendor_params.dry_sequence_breakers" in caught.value.violations
    await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
    await wait_until_idle(llama, within=5)


async def test_the_callers_deadline_stops_llama_cpp(llama):
    """A long answer (end of text ignored) cut by the caller's deadline: the slot is free again soon."""
    long = request({"ignore_eos": True}, max_tokens=8000, text="Count to a thousand.")
    long.deadline = asyncio.get_running_loop().time() + 1.5
    with pytest.raises(UpstreamError) as caught:
        async with asyncio.timeout(60), llama.stream(long) as chunks:
            async for _ in chunks:
                pass
    assert caught.value.failure is UpstreamFailure.TIMEOUT
    await wait_until_idle(llama, within=10)


async def test_the_deadline_goes_to_llama_cpp_as_its_time_limit():
    """llama.cpp's own limit (`t_max_predict_ms`) is set from the caller's deadline, as a
    second stop beside the closed stream."""
    async with FakeServer() as fake:
        fake.script(oa.chat("hi"))
        local = LocalProvider(dataclasses.replace(settings(), url=fake.base_url, key="k"))
        await local.start()
        try:
            r = request({})
            r.deadline = asyncio.get_running_loop().time() + 30
            async with local.stream(r) as chunks:
                async for _ in chunks:
                    pass
        finally:
            await local.close()
    limit = fake.requests[0].json()["t_max_predict_ms"]
    assert 0 < limit <= 30_000


def test_the_time_limit_is_reserved():
    assert {"t_max_predict_ms", "t_max_prompt_ms"} <= LocalProvider.reserved_vendor_keys
