"""Errors of aigc-service, read from gRPC errors.

The server answers every failure with a `google.rpc.Status` in the
`grpc-status-details-bin` trailer: a canonical code, a message, and a
`google.rpc.ErrorInfo` whose `reason` is a stable UPPER_SNAKE string
(MODEL_NOT_FOUND, CAPABILITY_NOT_SUPPORTED, UPSTREAM_TIMEOUT, ...) and whose
metadata holds the request id. grpcio raises a `grpc.RpcError`; this module
reads the status out of it (with grpcio-status):

    AigcError(Exception)        code (grpc.StatusCode), reason, domain, metadata,
                                request_id, field_violations (BadRequest),
                                retry_delay (RetryInfo), status (google.rpc.Status)

Errors made on the client side (a deadline that passed before the server
answered, a server that is not running) carry no ErrorInfo: `reason` is "".
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "aigc-service"

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class AigcError(Exception):
    """A failed call: its gRPC status code and the service's ErrorInfo."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status: status_pb2.Status | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status or status_pb2.Status(code=code.value[0], message=message)
        info = find_detail(self.status, error_details_pb2.ErrorInfo)
        #: ErrorInfo.reason, e.g. "MODEL_NOT_FOUND"; "" when the error has none.
        self.reason = info.reason if info else ""
        #: ErrorInfo.domain: "aigc-service" for the service's own errors.
        self.domain = info.domain if info else ""
        #: ErrorInfo.metadata: request_id, model, field, capability, ...
        self.metadata: dict[str, str] = dict(info.metadata) if info else {}
        #: The server's id of the request, for its logs.
        self.request_id = self.metadata.get("request_id", "")
        bad = find_detail(self.status, error_details_pb2.BadRequest)
        #: (field, description) of each invalid field (google.rpc.BadRequest).
        self.field_violations = [(v.field, v.description) for v in bad.field_violations] if bad else []
        retry = find_detail(self.status, error_details_pb2.RetryInfo)
        #: Seconds to wait before retrying (google.rpc.RetryInfo), when the server said.
        self.retry_delay = retry.retry_delay.ToTimedelta().total_seconds() if retry else None
        super().__init__(str(self))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> AigcError:
        """The AigcError for what a grpcio call raised (a grpc.RpcError that is a grpc.Call)."""
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        message = (error.details() if isinstance(error, grpc.Call) else str(error)) or ""
        status = None
        if isinstance(error, grpc.Call):
            try:
                status = rpc_status.from_call(error)
            except ValueError:  # code or message differ from the trailer's: trust the trailer
                status = _status_trailer(error)
        if status is not None:
            return cls(_CODES.get(status.code, code), status.message, status=status)
        return cls(code, message)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


def find_detail(status: status_pb2.Status, message_type: type) -> object | None:
    """The first detail of `status` of the given message type (e.g. ErrorInfo), or None."""
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            found = message_type()
            detail.Unpack(found)
            return found
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of a grpc.RpcError from the plain generated stub, or None."""
    status = AigcError.from_rpc_error(error).status
    return find_detail(status, error_details_pb2.ErrorInfo)


def _status_trailer(call: grpc.Call) -> status_pb2.Status | None:
    for key, value in call.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None
