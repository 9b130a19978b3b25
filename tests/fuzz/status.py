"""What every error of the HTTP API must look like: a google.rpc.Status (AIP-193)."""

from __future__ import annotations

import re
from typing import Any

REASON = re.compile(r"[A-Z][A-Z0-9_]*")
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def assert_status(status: Any, where: str = "error") -> dict[str, Any]:
    """`status` is a google.rpc.Status as JSON: an int `code` (1..16), a non-empty
    `message`, and `details` with exactly one ErrorInfo that has an UPPER_SNAKE
    `reason` and a `domain`. Returns the ErrorInfo."""
    assert isinstance(status, dict), f"{where}: not a JSON object: {status!r:.200}"
    code = status.get("code")
    assert type(code) is int and 1 <= code <= 16, f"{where}: bad code {code!r}"
    message = status.get("message")
    assert isinstance(message, str) and message, f"{where}: empty message"
    details = status.get("details")
    assert isinstance(details, list), f"{where}: no details"
    infos = [d for d in details if isinstance(d, dict) and d.get("@type") == ERROR_INFO]
    assert len(infos) == 1, f"{where}: expected one ErrorInfo in details, got {details!r:.300}"
    reason, domain = infos[0].get("reason"), infos[0].get("domain")
    assert isinstance(reason, str) and REASON.fullmatch(reason), f"{where}: bad reason {reason!r}"
    assert isinstance(domain, str) and domain, f"{where}: no domain"
    return infos[0]
