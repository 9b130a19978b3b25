"""Helpers for provider tests: drain a stream, catch the UpstreamError, and
read what a caller would get from it (its google.rpc.Status)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import Chunk


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


async def failure_of(call: Awaitable[Any]) -> UpstreamError:
    """The UpstreamError `call` raises; a bounded wait, so a hang fails the test."""
    with pytest.raises(UpstreamError) as caught:
        async with asyncio.timeout(20):
            await call
    return caught.value


def check_error(
    err: UpstreamError,
    failure: UpstreamFailure,
    code: grpc.StatusCode,
    reason: str,
    *,
    provider: str,
    upstream_status: int | None = None,
    upstream_request_id: str | None = None,
    retry_after: float | None = None,
    secret: str | None = None,
) -> None:
    """Asserts the classification and everything `err.to_status()` tells the caller."""
    assert err.failure is failure, err.message
    status = err.to_status(request_id="rid-1")
    assert status.code == code.value[0], (grpc.StatusCode(code), status)
    infos, retries = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retries.append(error_details_pb2.RetryInfo())
            detail.Unpack(retries[-1])
    assert len(infos) == 1, status
    info = infos[0]
    assert info.reason == reason
    assert info.domain == "aigc-service"
    assert info.metadata["provider"] == provider
    assert info.metadata["request_id"] == "rid-1"
    if upstream_status is None:
        # Always present (AIP-193, server/errors.py ERROR_INFO_KEYS): empty, no HTTP status to tell.
        assert info.metadata["upstream_status"] == "", info.metadata
    else:
        assert info.metadata["upstream_status"] == str(upstream_status)
    if upstream_request_id is not None:
        assert info.metadata["upstream_request_id"] == upstream_request_id
    if retry_after is None:
        assert not retries, retries
    else:
        assert len(retries) == 1
        delay = retries[0].retry_delay.seconds + retries[0].retry_delay.nanos / 1e9
        assert abs(delay - retry_after) <= 2, delay
    if secret:
        assert secret not in status.message
        assert secret not in str(err)
