"""The gate as the engine uses it: keys, allowed models, quotas charged from real usage, the
worker's in-flight cap - with a scripted provider, so each rule is seen on its own."""

from __future__ import annotations

import pytest

from server.access.gate import Gate, Overloaded
from server.access.keys import CallerKey, KeyRing, ModelNotAllowed, Unauthenticated, digest_of
from server.access.memory_quotas import MemoryQuotaStore
from server.access.quotas import QuotaExceeded, QuotaLimits
from server.core.engine import DEFAULT_RESERVED_TOKENS, Call, Engine
from server.errors import UpstreamError, UpstreamFailure
from server.observability import Observability
from server.routing import ModelRoute, Router
from tests.conformance.requests import chat, user
from tests.fakes.scripted import ScriptedProvider, finish, text
from tests.server.access.conftest import FakeClock

SECRET = "aigc-test-secret-key-000000000000000000000000"


def key(name: str = "team-a", models=None, **limits) -> CallerKey:
    return CallerKey(
        name, digest_of(SECRET + name), frozenset(models) if models else None, QuotaLimits(**limits)
    )


def setup(*scripts, caller: CallerKey | None = None, max_in_flight: int = 100, clock=None):
    provider = ScriptedProvider(*scripts)
    routes = [ModelRoute("m", provider, "up-m", aliases=("m-alias",)), ModelRoute("other", provider, "o")]
    keys = KeyRing([caller] if caller else [], enabled=caller is not None)
    gate = Gate(keys, MemoryQuotaStore(clock=clock or FakeClock()), max_in_flight=max_in_flight)
    return Engine(Router(routes, "m"), gate=gate), provider


def call(caller: CallerKey | None, method: str = "Chat") -> Call:
    return Call("rid", Observability().rpc(method, "rid", streaming=method.startswith("Stream")), key=caller)


def answer(tokens: int = 5):
    return [text("ok"), finish(prompt=tokens - 2, completion=2)]


# --- keys ----------------------------------------------------------------------


def test_authenticate_finds_the_key_by_its_hash_only():
    ring = KeyRing([key("a"), key("b")], enabled=True)
    assert ring.authenticate([("authorization", f"Bearer {SECRET}b")]).name == "b"
    assert ring.authenticate([("authorization", f"bearer  {SECRET}a ")]).name == "a"
    with pytest.raises(Unauthenticated) as missing:
        ring.authenticate([("x-other", "1")])
    with pytest.raises(Unauthenticated) as wrong:
        ring.authenticate([("authorization", f"Bearer {SECRET}c")])
    with pytest.raises(Unauthenticated) as basic:
        ring.authenticate([("authorization", f"Basic {SECRET}a")])
    assert (missing.value.reason, wrong.value.reason, basic.value.reason) == (
        "API_KEY_MISSING",
        "API_KEY_INVALID",
        "API_KEY_MISSING",
    )
    assert SECRET not in wrong.value.message and SECRET not in str(wrong.value.to_status())


def test_auth_off_asks_for_nothing():
    assert KeyRing([], enabled=False).authenticate([]) is None


async def test_a_key_uses_only_its_models_by_id_or_alias():
    caller = key(models=["m"])
    engine, provider = setup(answer(), answer(), caller=caller)
    await engine.generate(chat(user("hi"), model="m"), call(caller))
    await engine.generate(chat(user("hi"), model="m-alias"), call(caller))
    with pytest.raises(ModelNotAllowed) as caught:
        await engine.generate(chat(user("hi"), model="other"), call(caller))
    assert (caught.value.reason, caught.value.metadata["model"]) == ("MODEL_NOT_ALLOWED", "other")
    assert len(provider.requests) == 2


async def test_a_key_listing_an_alias_may_use_the_model_by_its_id_too():
    caller = key(models=["m-alias"])
    engine, _ = setup(answer(), caller=caller)
    assert (await engine.generate(chat(user("hi"), model="m"), call(caller))).text() == "ok"


# --- quotas through the engine --------------------------------------------------------------


async def test_requests_per_minute_then_rate_limited_without_an_upstream_call():
    caller = key(requests_per_minute=2)
    engine, provider = setup(answer(), answer(), answer(), caller=caller)
    for _ in range(2):
        await engine.generate(chat(user("hi")), call(caller))
    with pytest.raises(QuotaExceeded) as caught:
        await engine.generate(chat(user("hi")), call(caller))
    assert caught.value.reason == "RATE_LIMITED"
    assert caught.value.metadata["limit"] == "requests_per_minute"
    assert 29 <= caught.value.retry_after_seconds <= 30
    assert len(provider.requests) == 2


async def test_tokens_are_reserved_from_max_output_tokens_and_charged_from_usage():
    clock = FakeClock()
    caller = key(tokens_per_minute=1000)
    engine, _ = setup(answer(tokens=100), answer(tokens=5), caller=caller, clock=clock)
    # 1000 reserved would leave nothing: the request names 900, uses 100.
    request = chat(user("hi"), generation_config={"max_output_tokens": 900})
    await engine.generate(request, call(caller))
    # 900 left now: a second 900 fits only because the first was charged its real 100.
    await engine.generate(request, call(caller))
    with pytest.raises(QuotaExceeded) as caught:
        await engine.generate(request, call(caller))
    assert caught.value.metadata["limit"] == "tokens_per_minute"


async def test_a_request_with_no_limit_reserves_the_default():
    caller = key(tokens_per_minute=DEFAULT_RESERVED_TOKENS - 1)
    engine, provider = setup(answer(), caller=caller)
    # A reservation above a whole minute's budget is cut to the budget (it could never pass).
    await engine.generate(chat(user("hi")), call(caller))
    assert len(provider.requests) == 1


async def test_a_failed_call_gives_its_tokens_back():
    caller = key(tokens_per_minute=500)
    engine, _ = setup(
        [UpstreamError(UpstreamFailure.SERVER_ERROR, "down", provider="p")], answer(), caller=caller
    )
    request = chat(user("hi"), generation_config={"max_output_tokens": 500})
    with pytest.raises(UpstreamError):
        await engine.generate(request, call(caller))
    await engine.generate(request, call(caller))  # the whole budget is there again


async def test_concurrent_streams_per_key_and_the_slot_freed_when_the_stream_ends():
    caller = key(max_concurrent_streams=1)
    engine, _ = setup(answer(), answer(), caller=caller)
    async with engine.stream(chat(user("hi")), call(caller, "StreamChat")) as stream:
        with pytest.raises(QuotaExceeded) as caught:
            async with engine.stream(chat(user("hi")), call(caller, "StreamChat")):
                pass
        assert caught.value.metadata["limit"] == "max_concurrent_streams"
        async for _ in stream:
            pass
    async with engine.stream(chat(user("hi")), call(caller, "StreamChat")) as stream:
        assert [p.text async for parts in stream for p in parts] == ["ok"]


async def test_a_stream_left_early_frees_its_slot():
    caller = key(max_concurrent_streams=1)
    engine, provider = setup([text("a"), text("b"), finish()], answer(), caller=caller)
    async with engine.stream(chat(user("hi")), call(caller, "StreamChat")) as stream:
        await anext(stream)  # the caller goes away after one delta
    assert provider.closed == 1
    async with engine.stream(chat(user("hi")), call(caller, "StreamChat")) as stream:
        async for _ in stream:
            pass


async def test_the_workers_in_flight_cap_refuses_at_once_with_retry_info():
    engine, _ = setup([text("a"), finish()], answer(), max_in_flight=1)
    async with engine.stream(chat(user("hi")), call(None, "StreamChat")) as stream:
        with pytest.raises(Overloaded) as caught:
            await engine.generate(chat(user("hi")), call(None))
        async for _ in stream:
            pass
    status = caught.value.to_status()
    assert caught.value.reason == "OVERLOADED"
    assert [d.type_url.rsplit(".", 1)[-1] for d in status.details] == ["ErrorInfo", "RetryInfo"]
    await engine.generate(chat(user("hi")), call(None))  # room again
    assert engine.gate.in_flight == 0
