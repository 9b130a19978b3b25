"""Environments for server processes that do not depend on the developer's shell.

A child process inherits os.environ (tests/support/processes.py), which may
hold real vendor keys or a corporate proxy. Every variable the configuration
reads is set here explicitly - empty means unset to the server - and both
spellings of each proxy variable get the same value, so neither wins by accident.
"""

from __future__ import annotations

import pathlib
import textwrap

from server.catalog import PRESETS

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def isolated_env(**overrides: str) -> dict[str, str]:
    """Everything configuration-related blanked, then `overrides`.

    Proxy variables may be given in either case (HTTPS_PROXY=...); they are
    applied to both spellings.
    """
    env: dict[str, str] = {
        "AIGC_CONFIG": "",
        "AIGC_PRESETS": "",
        "AIGC_DEFAULT_MODEL": "",
        "AIGC_ALLOW_PASSTHROUGH": "",
        "AIGC_LOCAL_ENABLED": "false",
        "AIGC_METRICS_ADDRESS": "off",
        "AIGC_LOG_LEVEL": "INFO",
        "SSL_CERT_FILE": "",
    }
    for preset in PRESETS:
        if preset.api_key_env:
            env[preset.api_key_env] = ""
        env[preset.base_url_env] = ""
    for var in _PROXY_VARS:
        env[var] = env[var.upper()] = ""
    for name, value in overrides.items():
        if name.lower() in _PROXY_VARS:
            env[name.lower()] = env[name.upper()] = value
        else:
            env[name] = value
    return env


def write_config(directory: pathlib.Path, text: str, name: str = "aigc.toml") -> str:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def fake_upstream_config(directory: pathlib.Path, base_url: str) -> str:
    """A config file with only `fake-model` on an OpenAI-compatible upstream at `base_url`
    (key in FAKE_API_KEY)."""
    return write_config(
        directory,
        f"""
        presets = []
        default_model = "fake-model"

        [upstreams.fake]
        kind = "openai"
        base_url = "{base_url}/v1"
        api_key_env = "FAKE_API_KEY"
        max_retries = 0
        timeout_seconds = 20

        [[models]]
        id = "fake-model"
        upstream = "fake"
        upstream_model = "gpt-fake"
        aliases = ["fake"]
        """,
    )
