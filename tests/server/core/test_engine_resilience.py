"""Fallbacks and per-model caps in the engine: a second model only while nothing was sent.

A fallback is tried when the first model fails before its first chunk with a
failure another model may not share (busy, down, cut, timed out). Once a
chunk exists, the caller may have seen it: the error ends the stream as it
is, so no text is ever sent twice.
"""

from __future__ import annotations

import pytest

from server.core.engine import Call, Engine
from server.errors import InvalidRequest, UpstreamError, UpstreamFailure
from server.observability import Observability
from server.routing import ModelRoute, Router
from tests.conformance.requests import chat, user
from tests.fakes.scripted import OnRead, ScriptedProvider, finish, text


def failure(kind: UpstreamFailure, **fields) -> UpstreamError:
    return UpstreamError(kind, "boom", provider="primary", **fields)


def engine(primary: ScriptedProvider, *others: tuple[str, ScriptedProvider], **route) -> Engine:
    names = tuple(name for name, _ in others)
    routes = [ModelRoute("main", primary, "up-main", fallbacks=names, **route)]
    routes += [ModelRoute(name, provider, f"up-{name}") for name, provider in others]
    return Engine(Router(routes, "main"))


def call(observability: Observability | None = None, method: str = "StreamChat") -> Call:
    return Call(
        "rid", (observability or Observability()).rpc(method, "rid", streaming=method.startswith("Stream"))
    )


async def streamed(engine: Engine, the_call: Call, **fields) -> tuple[str, list[str]]:
    """The text that reached the caller, and the error reason that ended the stream (if any)."""
    seen = []
    try:
        async with engine.stream(chat(user("hi"), model="main", **fields), the_call) as stream:
            async for parts in stream:
                seen.extend(p.text for p in parts)
    except UpstreamError as error:
        return "".join(seen), [error.reason]
    return "".join(seen), []


@pytest.mark.parametrize(
    "error",
    [
        failure(UpstreamFailure.RATE_LIMITED, upstream_status=429),
        failure(UpstreamFailure.SERVER_ERROR, upstream_status=503),
        failure(UpstreamFailure.UNREACHABLE),
        failure(UpstreamFailure.TIMEOUT, timeout="first_token"),
        OnRead(failure(UpstreamFailure.STREAM_INTERRUPTED)),
    ],
    ids=["429", "503", "unreachable", "first-token-timeout", "cut-before-first-chunk"],
)
async def test_a_failure_before_the_first_chunk_falls_back(error):
    primary = ScriptedProvider([error])
    backup = ScriptedProvider([text("from backup"), finish()], name="backup")
    observability = Observability()
    the_call = call(observability)
    answer, errors = await streamed(engine(primary, ("backup-model", backup)), the_call)
    assert (answer, errors) == ("from backup", [])
    assert the_call.record.fallbacks == ["backup-model"]
    assert the_call.record.provider == "backup", "the record names who answered"
    assert primary.closed == 1 and backup.closed == 1
    reason = (error.error if isinstance(error, OnRead) else error).reason
    counted = observability.metrics.registry.get_sample_value(
        "aigc_fallbacks_total", {"from_model": "main", "to_model": "backup-model", "reason": reason}
    )
    assert counted == 1


async def test_after_the_first_chunk_there_is_no_fallback_and_no_text_twice():
    primary = ScriptedProvider([text("Hello, "), failure(UpstreamFailure.STREAM_INTERRUPTED)])
    backup = ScriptedProvider([text("Hello, world"), finish()], name="backup")
    the_call = call()
    answer, errors = await streamed(engine(primary, ("backup-model", backup)), the_call)
    assert answer == "Hello, "
    assert errors == ["UPSTREAM_STREAM_INTERRUPTED"]
    assert not backup.requests, "the fallback was never asked"
    assert the_call.record.fallbacks == []


@pytest.mark.parametrize(
    "error",
    [
        failure(UpstreamFailure.BAD_REQUEST, upstream_status=400),
        failure(UpstreamFailure.CONTEXT_TOO_LONG, upstream_status=400),
        failure(UpstreamFailure.CONTENT_FILTERED),
    ],
    ids=["bad-request", "context-too-long", "content-filtered"],
)
async def test_what_would_fail_everywhere_does_not_fall_back(error):
    backup = ScriptedProvider([text("never"), finish()], name="backup")
    _, errors = await streamed(engine(ScriptedProvider([error]), ("backup-model", backup)), call())
    assert errors == [error.reason]
    assert not backup.requests


async def test_fallbacks_are_tried_in_order_and_the_last_error_is_the_callers():
    first = ScriptedProvider([failure(UpstreamFailure.SERVER_ERROR)], name="first")
    second = ScriptedProvider([failure(UpstreamFailure.UNREACHABLE)], name="second")
    third = ScriptedProvider([failure(UpstreamFailure.RATE_LIMITED, retry_after_seconds=3)], name="third")
    the_call = call()
    the_engine = engine(first, ("second-model", second), ("third-model", third))
    _, errors = await streamed(the_engine, the_call)
    assert errors == ["UPSTREAM_RATE_LIMITED"]
    assert the_call.record.fallbacks == ["second-model", "third-model"]


async def test_a_fallback_that_cannot_serve_the_request_is_skipped():
    """A fallback without the capability the request uses (here JSON output) is passed over."""
    from aigc.v1 import model_pb2

    json_ok = frozenset({model_pb2.CAPABILITY_JSON_OUTPUT})
    primary = ScriptedProvider([failure(UpstreamFailure.SERVER_ERROR)])
    plain = ScriptedProvider([text("plain"), finish()], name="plain")
    capable = ScriptedProvider([text("{}"), finish()], name="capable")
    routes = [
        ModelRoute("main", primary, "m", fallbacks=("plain-model", "json-model"), capabilities=json_ok),
        ModelRoute("plain-model", plain, "p"),
        ModelRoute("json-model", capable, "j", capabilities=json_ok),
    ]
    the_call = call()
    answer, errors = await streamed(
        Engine(Router(routes, "main")), the_call, response_format={"type": "TYPE_JSON"}
    )
    assert (answer, errors) == ("{}", [])
    assert not plain.requests
    assert the_call.record.fallbacks == ["json-model"]


async def test_unary_falls_back_the_same_way():
    primary = ScriptedProvider([failure(UpstreamFailure.SERVER_ERROR)])
    backup = ScriptedProvider([text("ok"), finish()], name="backup")
    answer = await engine(primary, ("backup-model", backup)).generate(
        chat(user("hi"), model="main"), call(method="Chat")
    )
    assert (answer.text(), answer.model, answer.provider) == ("ok", "backup-model", "backup")


# --- per-model max_output_tokens ----------------------------------------------------------------


async def test_a_models_cap_refuses_a_larger_request_before_any_upstream_call():
    provider = ScriptedProvider([text("x"), finish()])
    with pytest.raises(InvalidRequest) as caught:
        await engine(provider, max_output_tokens=256).generate(
            chat(user("hi"), model="main", generation_config={"max_output_tokens": 257}), call()
        )
    assert caught.value.violations == {"generation_config.max_output_tokens": "at most 256 for model 'main'"}
    assert not provider.requests


async def test_a_models_cap_bounds_a_request_that_names_no_limit():
    provider = ScriptedProvider([text("x"), finish()], [text("y"), finish()])
    the_engine = engine(provider, max_output_tokens=256)
    await the_engine.generate(chat(user("hi"), model="main"), call())
    await the_engine.generate(
        chat(user("hi"), model="main", generation_config={"max_output_tokens": 100}), call()
    )
    sent = [r.config for r in provider.requests]
    assert [c.max_output_tokens for c in sent] == [256, 100]
    assert all(c.HasField("max_output_tokens") for c in sent)


async def test_vendor_params_cannot_lift_the_cap():
    """`n_predict`/`max_tokens` in vendor_params would override the typed limit: they are refused."""
    provider = ScriptedProvider([text("x"), finish()])
    provider.reserved_vendor_keys = frozenset({"max_tokens", "n_predict"})
    with pytest.raises(InvalidRequest) as caught:
        await engine(provider, max_output_tokens=16).generate(
            chat(user("hi"), model="main", vendor_params={"n_predict": 100000}), call()
        )
    assert "vendor_params.n_predict" in caught.value.violations
    assert not provider.requests
