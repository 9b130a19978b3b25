"""LocalProvider never uses a proxy: proven at the provider level, without the
loopback NO_PROXY that server/routing.py adds (tests/server/test_proxies.py
proves it through the whole server)."""

from __future__ import annotations

import asyncio

from server.config import Settings
from server.errors import UpstreamFailure
from server.providers.base import ChatMessage, GenerateRequest, Sampling
from server.providers.local import LocalProvider
from server.providers.openai_compat import OpenAICompatProvider
from tests.fakes.checks import collect, failure_of
from tests.proxies.relays import HttpProxy

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def short() -> GenerateRequest:
    return GenerateRequest(
        upstream_model="smollm2",
        messages=(ChatMessage("user", "Say hello."),),
        sampling=Sampling(max_output_tokens=4, temperature=0),
    )


async def test_local_provider_ignores_proxy_variables_without_no_proxy(monkeypatch):
    proxy = HttpProxy()
    await proxy.start()
    for var in _PROXY_VARS:
        monkeypatch.setenv(var, proxy.url)
        monkeypatch.setenv(var.lower(), proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    local = LocalProvider(Settings.from_env({}).local)
    try:
        await asyncio.wait_for(local.start(), 120)
        result = await asyncio.wait_for(local.generate(short()), 60)
        chunks = await asyncio.wait_for(collect(local.stream(short())), 60)
        assert await local.busy_slots() == 0
        assert result.text and "".join(c.text for c in chunks)
        assert proxy.relayed == [] and proxy.refused == 0

        # Control: in this very environment a client that trusts it does use the proxy.
        control = OpenAICompatProvider(
            "control", base_url=f"{local.address}/v1", api_key="unused", max_retries=0
        )
        err = await failure_of(control.generate(short()))  # the key is wrong; only the path matters
        await control.close()
        assert err.failure is UpstreamFailure.AUTHENTICATION
        assert proxy.relayed == [local.address.removeprefix("http://")]
    finally:
        await local.close()
        await proxy.stop()
