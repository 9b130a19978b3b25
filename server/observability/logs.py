"""One log format for everything the process writes: JSON lines by default.

Every record - our access lines, our application logs with their `extra=`
fields, and third-party libraries' logs - goes through the root handler set
up by `configure`. Inside an RPC, `request_id` is added from a context
variable, so every line of that RPC carries it without passing it around.

    {"time": "2026-11-24T10:00:00.123Z", "level": "INFO", "logger": "aigc.access",
     "message": "StreamChat OK 312.4ms", "request_id": "...", ...extra fields}
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import sys
import time
from typing import Any, TextIO

import orjson

from server.observability.settings import LogFormat

# The id of the RPC being served in this task; None outside RPCs.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("aigc_request_id", default=None)
# This process's worker number under a supervisor (on every line), else None.
_worker: int | None = None

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record as a flat dict: standard keys first, then the `extra=` fields."""
    out: dict[str, Any] = {
        "time": _timestamp(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    if _worker is not None:
        out["worker"] = _worker
    request_id = request_id_var.get()
    if request_id is not None:
        out["request_id"] = request_id
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values that are not JSON types become strings."""

    def format(self, record: logging.LogRecord) -> str:
        out = fields(record)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # orjson: a few µs per access line instead of tens (one per RPC).
        return orjson.dumps(out, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """For people: `time LEVEL logger message key=value ...`, one line per record
    (control characters in the message and values escaped; a traceback follows
    on lines of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        out = fields(record)
        message = _CONTROL.sub(_escape, out.pop("message"))
        head = f"{out.pop('time')} {out.pop('level'):<7} {out.pop('logger')}: {message}"
        rest = " ".join(f"{key}={_console_value(value)}" for key, value in out.items() if value is not None)
        line = f"{head}  {rest}" if rest else head
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(
    level: str, log_format: LogFormat, stream: TextIO | None = None, *, worker: int | None = None
) -> None:
    """Replaces the root logger's handlers with one writing `log_format` to stdout."""
    global _worker
    _worker = worker
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


# The formatted second of the last line: every line (one access line per RPC
# at least) within the same second reuses it; strftime was ~5 µs a line.
_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    global _second
    # Rounded to the microsecond first, as datetime.fromtimestamp does.
    fraction, seconds = math.modf(created)
    whole, micros = divmod(int(seconds) * 1_000_000 + round(fraction * 1_000_000), 1_000_000)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)))
    return f"{_second[1]}{micros // 1000:03d}Z"


# What must not reach a terminal raw: C0 controls (newline: a forged line; ESC: a
# terminal escape), DEL, C1 controls (U+0085 is a newline to some readers) and
# the Unicode line/paragraph separators. Callers control model names and more.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or f"\\u{ord(char):04x}"


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if " " in text or not text or _CONTROL.search(text):
        # Quoted as JSON, then what JSON leaves raw (DEL, C1, U+2028/9) escaped too.
        return _CONTROL.sub(_escape, json.dumps(text, ensure_ascii=False))
    return text
