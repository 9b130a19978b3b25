"""The engine: the order of checks, completions per capability, the finish check."""

from __future__ import annotations

import pytest

from aigc.v1 import aigc_service_pb2, content_pb2, model_pb2
from server.core.engine import Call, Engine
from server.errors import (
    CapabilityNotSupported,
    InvalidRequest,
    ModelNotFound,
    ProviderNotConfigured,
    UpstreamError,
    UpstreamFailure,
)
from server.observability import Observability
from server.routing import ModelRoute, Router
from tests.conformance.requests import chat, user
from tests.fakes.scripted import ScriptedProvider, finish, text


class Unconfigured(ScriptedProvider):
    def ready(self) -> bool:
        return False

    def not_ready_hint(self) -> str:
        return "set ITS_KEY"


def engine(provider: ScriptedProvider, capabilities=()) -> Engine:
    return Engine(Router([ModelRoute("m", provider, "up-m", capabilities=frozenset(capabilities))], "m"))


def call() -> Call:
    return Call("rid", Observability().rpc("Chat", "rid", streaming=False))


async def test_a_bad_request_is_invalid_whatever_model_it_names():
    with pytest.raises(InvalidRequest):
        await engine(ScriptedProvider()).generate(chat(user(""), model="nope"), call())
    with pytest.raises(ModelNotFound):
        await engine(ScriptedProvider()).generate(chat(user("hi"), model="nope"), call())


async def test_capability_is_checked_before_configuration():
    request = chat(user("hi"), response_format={"type": "TYPE_JSON"})
    with pytest.raises(CapabilityNotSupported):
        await engine(Unconfigured()).generate(request, call())
    with pytest.raises(ProviderNotConfigured) as caught:
        await engine(Unconfigured(), [model_pb2.CAPABILITY_JSON_OUTPUT]).generate(request, call())
    assert "ITS_KEY" in caught.value.message


async def test_vendor_params_clash_is_reported_with_the_other_violations():
    provider = ScriptedProvider()
    provider.reserved_vendor_keys = frozenset({"messages"})
    request = chat(user("hi"), vendor_params={"messages": []}, generation_config={"temperature": 9})
    with pytest.raises(InvalidRequest) as caught:
        await engine(provider).generate(request, call())
    assert set(caught.value.violations) == {"vendor_params.messages", "generation_config.temperature"}
    assert not provider.requests


async def test_completion_is_raw_only_where_the_model_has_it():
    request = aigc_service_pb2.CompleteRequest(prompt="Once upon", user_id="u1")
    raw = ScriptedProvider([text(" a time"), finish()])
    answer = await engine(raw, [model_pb2.CAPABILITY_RAW_COMPLETION]).generate(request, call())
    assert (raw.requests[0].prompt, raw.requests[0].chat, answer.text()) == ("Once upon", None, " a time")
    chat_only = ScriptedProvider([text("A time."), finish()])
    await engine(chat_only).generate(request, call())
    sent = chat_only.requests[0]
    assert sent.prompt is None and sent.user_id == "u1"
    assert [(m.role, m.content) for m in sent.chat.messages] == [(content_pb2.ROLE_USER, "Once upon")]


@pytest.mark.parametrize("script", [[text("cut")], []], ids=["no-finish", "nothing"])
async def test_a_stream_without_a_finish_is_interrupted(script):
    with pytest.raises(UpstreamError) as caught:
        await engine(ScriptedProvider(script)).generate(chat(user("hi")), call())
    assert caught.value.failure is UpstreamFailure.STREAM_INTERRUPTED


async def test_unary_is_the_stream_folded():
    provider = ScriptedProvider([text("Hel"), text("lo"), finish(5, 2)])
    answer = await engine(provider).generate(chat(user("hi")), call())
    assert [p.text for p in answer.parts] == ["Hello"]
    assert (answer.usage.total_tokens, answer.response_id, answer.model, answer.provider) == (
        7,
        "r-1",
        "m",
        "scripted",
    )
    assert provider.closed == 1
