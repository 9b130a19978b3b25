"""The google.rpc.Status of a failed gRPC call, unpacked: what tests check of every error.

Every refusal of ours carries a Status in `grpc-status-details-bin` with an
ErrorInfo (domain aigc-service), and where it applies BadRequest field
violations or a RetryInfo delay. One reader for all of them, so a test that
checks a reason cannot pass on an error that carries none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "aigc-service"


@dataclass(frozen=True)
class Details:
    """What a failed call's Status says, detail by detail."""

    status: status_pb2.Status
    info: error_details_pb2.ErrorInfo | None = None
    #: BadRequest field violations: field path -> description.
    violations: dict[str, str] = field(default_factory=dict)
    #: RetryInfo's delay in seconds.
    retry_seconds: float | None = None
    #: Details of any other type.
    others: list[any_pb2.Any] = field(default_factory=list)


def status_details(error: grpc.RpcError) -> Details:
    """The Status of `error`, which must be there and agree with the call's code."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status in {error}"
    assert status.code == error.code().value[0], f"Status code {status.code} on a {error.code()} call"
    info, violations, retry, others = None, {}, None, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            detail.Unpack(delay)
            retry = delay.retry_delay.seconds + delay.retry_delay.nanos / 1e9
        else:
            others.append(detail)
    return Details(status, info, violations, retry, others)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of `error`, which must be there and be ours."""
    info = status_details(error).info
    assert info is not None, f"no ErrorInfo in {error}"
    assert info.domain == DOMAIN, f"ErrorInfo of domain {info.domain!r}"
    return info


__all__ = ["DOMAIN", "Details", "error_info", "status_details"]
