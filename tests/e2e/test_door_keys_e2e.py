"""Caller keys on the agent doors, through Envoy, with authentication on: the Anthropic door
takes our key as `x-api-key` (what Claude Code sends) or `authorization: Bearer` (the anthropic
SDK 2.10's), the
Responses door as `authorization: Bearer` (the openai SDK's); without one, or with a wrong
one, each answers 401 in its own API's shape with our reason."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from server.access.keys import digest_of, new_key
from tests.fakes import anthropic_fake, openai_fake
from tests.fakes.http import FakeServer
from tests.proxies.env import isolated_env, write_config
from tests.proxies.relays import LoopThread
from tests.support.stack import Stack, running_stack

KEY = new_key()
HI = [{"role": "user", "content": "hi"}]


class Keyed:
    def __init__(self, stack: Stack, vendor: FakeServer, loop: LoopThread) -> None:
        self.stack, self.vendor, self.loop = stack, vendor, loop

    def script(self, *replies) -> None:
        self.loop.loop.call_soon_threadsafe(self.vendor._replies.extend, replies)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    with LoopThread() as loop:
        vendor = FakeServer()
        loop.run(vendor.__aenter__())
        try:
            config = f"""
                default_model = "gpt-4o-mini"

                [upstreams.openai]
                base_url = "{vendor.base_url}/v1"
                max_retries = 0

                [upstreams.anthropic]
                base_url = "{vendor.base_url}"
                max_retries = 0

                [[keys]]
                name = "agent"
                sha256 = "{digest_of(KEY).hex()}"
                """
            path = write_config(tmp_path_factory.mktemp("keys"), config)
            env = isolated_env(
                AIGC_CONFIG=path, OPENAI_API_KEY="sk-keys-vendor-1a2b", ANTHROPIC_API_KEY="sk-ant-keys-3c4d"
            )
            with running_stack(env) as stack:
                yield Keyed(stack, vendor, loop)
        finally:
            loop.run(vendor.__aexit__(None, None, None))


def test_the_anthropic_door_takes_our_key_as_x_api_key_or_bearer(keyed: Keyed):
    base = f"{keyed.stack.http}/anthropic"
    # x-api-key, as Claude Code and the Anthropic SDKs before 2.x send it.
    keyed.script(anthropic_fake.stream(anthropic_fake.message_events(["one"])))
    body = {"model": "claude-haiku-4-5", "max_tokens": 9, "messages": HI}
    by_header = httpx.post(f"{base}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=20)
    assert by_header.status_code == 200, by_header.text
    assert by_header.json()["content"][0]["text"] == "one"
    assert KEY not in str(keyed.vendor.requests[-1].headers), "our key is not passed on"
    # authorization: Bearer, as the anthropic SDK 2.10 sends its api_key.
    keyed.script(anthropic_fake.stream(anthropic_fake.message_events(["two"])))
    sdk = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0)
    assert sdk.messages.create(model="claude-haiku-4-5", max_tokens=9, messages=HI).content[0].text == "two"
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        anthropic.Anthropic(base_url=base, api_key="nope", max_retries=0).messages.create(
            model="claude-haiku-4-5", max_tokens=9, messages=HI
        )
    assert wrong.value.body["error"]["reason"] == "API_KEY_INVALID"
    bad_header = httpx.post(f"{base}/v1/messages", json=body, headers={"x-api-key": "nope"}, timeout=20)
    assert bad_header.status_code == 401 and bad_header.json()["error"]["reason"] == "API_KEY_INVALID"
    missing = httpx.post(f"{base}/v1/messages", json=body, timeout=20)
    assert missing.status_code == 401
    assert missing.json()["type"] == "error" and missing.json()["error"]["reason"] == "API_KEY_MISSING"


def test_the_responses_door_takes_our_key_as_bearer(keyed: Keyed):
    base = f"{keyed.stack.http}/openai/v1"
    keyed.script(openai_fake.stream(openai_fake.chat_events(["three"])))
    reply = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0).responses.create(
        model="gpt-4o-mini", input="hi"
    )
    assert reply.output_text == "three"
    with pytest.raises(openai.AuthenticationError) as missing:
        openai.OpenAI(base_url=base, api_key="nope", max_retries=0).responses.create(
            model="gpt-4o-mini", input="hi"
        )
    assert missing.value.code == "API_KEY_INVALID"
