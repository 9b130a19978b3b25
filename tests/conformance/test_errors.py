"""Failures: every vendor error classified the same way, streams that break, retries."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.rpc import code_pb2, error_details_pb2

from server.errors import UPSTREAM_TABLE, UpstreamError, UpstreamFailure
from tests.conformance.requests import chat, user
from tests.fakes import KEY
from tests.fakes.http import Hang, closed_port

REQUEST = chat(user("hi"))


async def _failure(call) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        async with asyncio.timeout(20):
            await call
    return caught.value


def _info(error: UpstreamError) -> error_details_pb2.ErrorInfo:
    status = error.to_status("rid-1")
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(status)


def _retry_delay(error: UpstreamError) -> float | None:
    for detail in error.to_status().details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_http_errors_are_classified(harness, vendor, fake, streaming):
    for case, reply, failure_name, status in vendor.http_failures:
        fake.requests.clear()
        fake.script(reply)
        run = harness.stream if streaming else harness.unary
        error = await _failure(run(REQUEST))
        failure = UpstreamFailure[failure_name]
        assert error.failure is failure, (case, error.message)
        code, reason = UPSTREAM_TABLE[failure]
        info = _info(error)
        assert (error.code, info.reason, info.domain) == (code, reason, "aigc-service"), case
        assert info.metadata["upstream_status"] == str(status), case
        assert info.metadata["provider"] == vendor.name
        assert info.metadata["request_id"] == "rid-1"
        assert KEY not in error.message and KEY not in str(error.to_status()), case


async def test_rate_limit_carries_retry_info(harness, vendor, fake):
    fake.script(vendor.rate_limited("30"))
    error = await _failure(harness.unary(REQUEST, max_retries=2))
    assert error.failure is UpstreamFailure.RATE_LIMITED
    assert abs(_retry_delay(error) - 30) <= 1
    assert len(fake.requests) == 1, "a wait longer than we would sit through is the caller's to decide"


async def test_retry_after_a_short_rate_limit_then_success(harness, vendor, fake):
    fake.script(vendor.rate_limited("0.2"), vendor.text_reply(["second try"]))
    started = time.monotonic()
    result = await harness.unary(REQUEST, max_retries=1)
    assert result.texts() == ["second try"]
    assert len(fake.requests) == 2
    assert time.monotonic() - started >= 0.2, "Retry-After is honoured"


async def test_no_retry_once_output_started(harness, vendor, fake):
    fake.script(vendor.cut_reply(["one", "two"]), vendor.text_reply(["never sent"]))
    error = await _failure(harness.stream(REQUEST, max_retries=2))
    assert error.failure is UpstreamFailure.STREAM_INTERRUPTED
    assert len(fake.requests) == 1


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_stream_cut_mid_way_is_interrupted(harness, vendor, fake, streaming):
    fake.script(vendor.cut_reply(["one", "two"]))
    run = harness.stream if streaming else harness.unary
    error = await _failure(run(REQUEST))
    assert error.failure is UpstreamFailure.STREAM_INTERRUPTED
    assert error.code == code_pb2.UNAVAILABLE


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_error_event_inside_a_200_stream(harness, vendor, fake, streaming):
    fake.script(vendor.stream_error_reply(["partial"]))
    run = harness.stream if streaming else harness.unary
    error = await _failure(run(REQUEST))
    assert error.failure is UpstreamFailure.SERVER_ERROR


async def test_malformed_chunk(harness, vendor, fake):
    fake.script(vendor.malformed_reply())
    error = await _failure(harness.unary(REQUEST))
    assert error.failure is UpstreamFailure.MALFORMED_RESPONSE


async def test_200_that_is_not_an_event_stream_is_malformed(harness, vendor, fake):
    fake.script(vendor.html_reply())
    error = await _failure(harness.unary(REQUEST))
    assert error.failure is UpstreamFailure.MALFORMED_RESPONSE


async def test_hung_vendor_times_out_and_the_connection_is_dropped(harness, vendor, fake):
    fake.script(Hang())
    error = await _failure(harness.unary(REQUEST, timeout_seconds=0.3))
    assert error.failure is UpstreamFailure.TIMEOUT
    await asyncio.wait_for(fake.client_gone.wait(), 5)


async def test_connection_refused_is_unreachable(vendor):
    from tests.conformance.conftest import Harness
    from tests.fakes.http import FakeServer

    dead = FakeServer()
    dead.port = closed_port()
    error = await _failure(Harness(vendor, dead).unary(REQUEST))
    assert error.failure is UpstreamFailure.UNREACHABLE
    assert KEY not in error.message


async def test_caller_deadline_bounds_a_stalled_stream(harness, vendor, fake):
    fake.script(vendor.held_reply(["first"]))
    started = time.monotonic()
    error = await _failure(harness.stream(REQUEST, caller_timeout=0.5, timeout_seconds=60))
    assert error.failure is UpstreamFailure.TIMEOUT
    assert time.monotonic() - started < 5
    await asyncio.wait_for(fake.client_gone.wait(), 5)


async def test_leaving_the_stream_closes_the_upstream_connection(harness, vendor, fake):
    """What happens when a caller cancels: the scope ends, the vendor's connection closes."""
    fake.script(vendor.held_reply(["first"]))
    engine = harness.engine()
    provider = engine.router.default.provider
    await provider.start()
    try:
        async with engine.stream(REQUEST, _call()) as stream:
            first = await asyncio.wait_for(anext(stream), 5)
            assert "".join(p.text for p in first) == "first"
            assert not fake.client_gone.is_set()
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    finally:
        await provider.close()


async def test_cancelled_unary_call_closes_the_upstream_connection(harness, vendor, fake):
    fake.script(vendor.held_reply(["first"]))
    task = asyncio.create_task(harness.unary(REQUEST))
    async with asyncio.timeout(5):
        while not fake.requests:  # noqa: ASYNC110 - the fake records requests in a list
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the first piece arrives; the fold waits for more
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.client_gone.wait(), 5)


def _call():
    from tests.conformance.conftest import _call as call

    return call("StreamChat")
