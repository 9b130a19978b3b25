"""The stack the fuzz run and the hostile-input tests talk to."""

from __future__ import annotations

from tests.proxies.env import isolated_env

#: The server-side cap on generated tokens: no generated request costs more.
MAX_OUTPUT_TOKENS = 8


def fuzz_env() -> dict[str, str]:
    """The built-in local model only: no vendor presets, no keys, generation capped.

    With no vendor upstream nothing can be unreachable, so a 5xx is always a defect.
    """
    return isolated_env(
        AIGC_PRESETS="none",
        AIGC_LOCAL_ENABLED="true",
        AIGC_LOCAL_MAX_OUTPUT_TOKENS=str(MAX_OUTPUT_TOKENS),
    )
