"""The log formatters and the per-RPC request id, in process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest

from server.errors import ModelNotFound
from server.observability import Observability, configure_logging
from server.observability.logs import JsonFormatter, request_id_var


@contextlib.contextmanager
def capture(log_format: str) -> Iterator[io.StringIO]:
    """Root logging configured as the server does it, into a buffer; restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", log_format, stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    with capture("json") as stream:
        yield stream


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_extra_fields_and_exceptions(captured):
    log = logging.getLogger("test.json")
    log.info("hello %s", "world", extra={"port": 9000, "path": object.__name__, "odd": {1, 2}})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    hello, failed = lines(captured)
    assert hello["message"] == "hello world"
    assert hello["level"] == "INFO" and hello["logger"] == "test.json"
    assert hello["port"] == 9000 and hello["path"] == "object"
    assert hello["odd"] == "{1, 2}"  # not a JSON type: written as text, not dropped
    assert "request_id" not in hello
    assert failed["level"] == "ERROR"
    assert "ValueError: boom" in failed["exception"]


def test_every_line_inside_an_rpc_carries_its_request_id(captured):
    observability = Observability()
    with observability.rpc("Chat", "rid-1", streaming=False):
        logging.getLogger("server.providers.local").warning("slow upstream", extra={"seconds": 3})
    logging.getLogger("test").info("after the RPC")
    inside, access, after = lines(captured)
    assert inside["request_id"] == "rid-1" and inside["seconds"] == 3
    assert access["logger"] == "aigc.access" and access["request_id"] == "rid-1"
    assert "request_id" not in after
    assert request_id_var.get() is None


async def test_cancelled_rpc_is_logged_as_cancelled_or_deadline(captured):
    observability = Observability()

    async def handler(request_id: str, remaining: float | None) -> None:
        with observability.rpc("StreamChat", request_id, streaming=True, time_remaining=remaining):
            await asyncio.sleep(10)

    for request_id, remaining in (("c-1", None), ("c-2", -0.1)):
        task = asyncio.create_task(handler(request_id, remaining))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    cancelled, expired = lines(captured)
    assert (cancelled["code"], cancelled["cancelled"]) == ("CANCELLED", True)
    assert (expired["code"], expired["cancelled"]) == ("DEADLINE_EXCEEDED", True)
    metrics = observability.metrics.registry
    assert (
        metrics.get_sample_value(
            "aigc_requests_total",
            {
                "method": "StreamChat",
                "model": "unknown",
                "provider": "",
                "surface": "grpc",
                "code": "CANCELLED",
            },
        )
        == 1
    )


def test_aborted_rpc_keeps_its_error_code(captured):
    observability = Observability()
    with pytest.raises(RuntimeError), observability.rpc("Chat", "a-1", streaming=False) as record:
        record.failed(ModelNotFound("x"))
        raise RuntimeError("what context.abort raises")
    (line,) = lines(captured)
    assert line["code"] == grpc.StatusCode.NOT_FOUND.name
    assert line["error_reason"] == "MODEL_NOT_FOUND"


def test_console_format():
    with capture("console") as stream:
        token = request_id_var.set("r-9")
        logging.getLogger("test.console").info("two words", extra={"model": "smollm2", "note": "a b"})
        request_id_var.reset(token)
    line = stream.getvalue().strip()
    assert line.endswith('INFO    test.console: two words  request_id=r-9 model=smollm2 note="a b"')


HOSTILE = "m\nFORGED 2026-01-01T00:00:00.000Z INFO    aigc.access: ok\t\x1b[31mred\x7f\x85\u2028"


def test_console_format_escapes_control_characters_in_messages_and_values():
    """A model name with a newline, TAB or ESC was written raw: forged lines, terminal escapes."""
    with capture("console") as stream:
        logging.getLogger("test.console").info("model %s", HOSTILE, extra={"model": HOSTILE})
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert not any(c in text[:-1] for c in "\t\x1b\x7f\x85\u2028\r"), repr(text)
    assert "\\nFORGED" in text and "\\u001b[31m" in text


def test_console_lines_of_the_real_server_cannot_be_forged():
    import grpc as grpc_module

    from aigc.v1 import aigc_service_pb2, aigc_service_pb2_grpc, content_pb2
    from tests.support.processes import running_server

    # No space in it: values with spaces were quoted (escaped) already, others raw.
    model = "m\nFORGED\t\x1b[31mred"
    with running_server({"AIGC_LOG_FORMAT": "console"}) as server:
        with grpc_module.insecure_channel(server.address) as channel:
            stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
            message = content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")
            with pytest.raises(grpc_module.RpcError):
                stub.Chat(aigc_service_pb2.ChatRequest(model=model, messages=[message]), timeout=10)
        output = server.output()
    assert "FORGED" in output
    assert not [line for line in output.splitlines() if line.startswith("FORGED")]
    assert "\x1b[31m" not in output


@pytest.mark.parametrize(
    "created",
    [
        1_760_987_952.6399994,  # rounds up to .640 at the microsecond, as datetime does
        1_700_000_000.9999996,  # rounds into the next second
        1_700_000_000.0,
        1_700_000_000.0005,
        1_700_000_059.9994999,
    ],
)
def test_time_field_is_utc_to_the_millisecond_as_datetime_formats_it(created):
    """The per-second cache in the formatter gives what datetime gives, at every edge."""
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    record = logging.LogRecord("aigc.test", logging.INFO, __file__, 1, "hello", (), None)
    record.created = created
    assert json.loads(JsonFormatter().format(record))["time"] == expected
    # The same second again (the cached prefix) and the next one.
    record.created = created + 1
    later = datetime.datetime.fromtimestamp(created + 1, tz=datetime.UTC)
    expected = later.strftime("%Y-%m-%dT%H:%M:%S.") + f"{later.microsecond // 1000:03d}Z"
    assert json.loads(JsonFormatter().format(record))["time"] == expected
