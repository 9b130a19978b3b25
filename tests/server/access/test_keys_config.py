"""Caller keys in the configuration: how auth turns on, and every mistake that stops the
server - named, and never echoing a key."""

from __future__ import annotations

import pytest

from server.access.keys import digest_of, main, new_key
from server.config import Settings
from server.envvars import ConfigError
from tests.proxies.env import isolated_env, write_config

KEY = new_key()
DIGEST = digest_of(KEY).hex()


def settings(tmp_path, text: str = "", **env: str) -> Settings:
    if text:
        env["AIGC_CONFIG"] = write_config(tmp_path, text)
    return Settings.from_env(isolated_env(AIGC_LOCAL_ENABLED="true", **env))


def refused(tmp_path, text: str = "", **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, text, **env)
    message = str(caught.value)
    assert KEY not in message and DIGEST not in message
    return message


def test_auth_is_off_with_no_keys_and_on_with_any(tmp_path):
    assert not settings(tmp_path).access.keys.enabled
    ring = settings(
        tmp_path, f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nrequests_per_minute = 5\n'
    ).access.keys
    assert ring.enabled and [k.name for k in ring.keys] == ["a"]
    assert ring.keys[0].limits.requests_per_minute == 5
    assert ring.authenticate([("authorization", f"Bearer {KEY}")]).name == "a"


def test_aigc_api_keys_and_aigc_auth(tmp_path):
    ring = settings(tmp_path, AIGC_API_KEYS=f"svc-a:{DIGEST}, svc-b:{'0' * 64}").access.keys
    assert ring.enabled and [k.name for k in ring.keys] == ["svc-a", "svc-b"]
    off = settings(tmp_path, AIGC_API_KEYS=f"svc-a:{DIGEST}", AIGC_AUTH="off").access.keys
    assert not off.enabled and off.authenticate([]) is None


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (f'[[keys]]\nname = "a"\nkey = "{KEY}"\n', {}, "a key must not be written in the file"),
        (
            '[[keys]]\nname = "a"\nsha256 = "abc"\n',
            {},
            "sha256 must be 64 hex digits (the value was not shown)",
        ),
        (f'[[keys]]\nname = "a b"\nsha256 = "{DIGEST}"\n', {}, "name must be letters, digits"),
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n',
            {},
            "used twice",
        ),
        (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nrequests_per_minute = 0\n', {}, "above 0"),
        (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nrpm = 5\n', {}, "unknown key 'rpm'"),
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nmodels = ["gpt-5-typo"]\n',
            {},
            "no model 'gpt-5-typo'",
        ),
        ("", {"AIGC_AUTH": "on"}, "AIGC_AUTH=on but no keys are configured"),
        ("", {"AIGC_AUTH": "maybe"}, "expected auto, on or off"),
        ("", {"AIGC_QUOTA_REDIS_FAILURE": "sometimes"}, "AIGC_QUOTA_REDIS_FAILURE"),
        ("", {"AIGC_REDIS_URL": "localhost:6379"}, "AIGC_REDIS_URL"),
        ("", {"AIGC_API_KEYS": f"svc:{KEY}"}, "sha256 must be 64 hex digits"),
    ],
)
def test_mistakes_stop_the_server_and_never_show_a_key(tmp_path, text, env, expected):
    assert expected in refused(tmp_path, text, **env)


def test_the_cli_prints_a_key_once_with_its_entry(capsys):
    assert main(["new", "team-x"]) == 0
    out = capsys.readouterr().out
    key = out.split("it is not stored): ")[1].split()[0]
    assert f'sha256 = "{digest_of(key).hex()}"' in out
    assert main(["hash", key]) == 0 and capsys.readouterr().out.strip() == digest_of(key).hex()
    assert main(["new", "bad name"]) == 2
