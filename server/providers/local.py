"""The built-in `local` provider: a GGUF model run by llama.cpp in-process.

llama.cpp's own HTTP server (through the `xllamacpp` wheel) runs inside this
process, bound to 127.0.0.1 on a free port and protected by a random API key,
and we talk to it with the same OpenAI-protocol adapter as any remote vendor.
That gives us llama.cpp's continuous batching across parallel slots, its chat
templates and its exact token counts, and it gives cancellation for free:
closing the HTTP stream makes llama.cpp stop decoding for that request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import urllib.request
from collections.abc import AsyncIterator

import xllamacpp

from server.config import LocalModelSettings, smollm2_path
from server.providers.base import Chunk, GenerateRequest, Provider
from server.providers.openai_compat import OpenAICompatProvider

log = logging.getLogger(__name__)


class LocalProvider(Provider):
    name = "local"

    def __init__(self, settings: LocalModelSettings, *, verbose: bool = False) -> None:
        self._settings = settings
        self._verbose = verbose
        self._key = ""
        self._server: xllamacpp.Server | None = None
        self._api: OpenAICompatProvider | None = None
        self.address = ""

    async def start(self) -> None:
        path = self._settings.path or str(smollm2_path())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"local model file not found: {path}")
        # The port is loopback-only, and the key keeps other local users off it.
        self._key = key = secrets.token_urlsafe(24)
        params = xllamacpp.CommonParams()
        params.model.path = path
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # any free port; read back from listening_address
        params.api_keys = [key]
        params.n_parallel = self._settings.parallel
        # llama.cpp splits n_ctx across slots; we configure it per slot.
        params.n_ctx = self._settings.context_tokens * self._settings.parallel
        if self._settings.threads:
            params.cpuparams.n_threads = self._settings.threads
            params.cpuparams_batch.n_threads = self._settings.threads
        params.endpoint_slots = True
        # llama.cpp logs several lines per request to stderr; keep them for
        # AIGC_LOG_LEVEL=DEBUG only.
        params.verbosity = 3 if self._verbose else 0
        # Loading takes ~0.5 s of C++ work: keep the event loop free meanwhile.
        self._server = await asyncio.to_thread(xllamacpp.Server, params)
        self.address = self._server.listening_address
        log.info(
            "local model loaded",
            extra={"model_path": path, "llama_server": self.address, "slots": self._settings.parallel},
        )
        # One retry, for the one failure that does pass: a pooled keep-alive
        # connection that llama.cpp closed for idleness just as we reuse it
        # ("Server disconnected without sending a response"). The SDK retries
        # only before any response byte, so nothing is generated twice.
        # trust_env=False: loopback traffic never goes through a proxy, whatever
        # HTTP_PROXY/ALL_PROXY/NO_PROXY say (the NO_PROXY that routing adds for
        # loopback is a second line of defence, not the only one).
        self._api = OpenAICompatProvider(
            self.name, base_url=f"{self.address}/v1", api_key=key, max_retries=1, trust_env=False
        )
        await self._api.start()

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None
        # Dropping the last reference stops llama.cpp's HTTP and decode loops.
        self._server = None

    def ready(self) -> bool:
        return self._api is not None

    # generate() is the base class's folded stream: llama.cpp stops decoding
    # when a stream is closed, but finishes a unary request nobody awaits.

    def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        # Hand out the adapter's generator itself, so closing it (caller
        # cancelled) closes the HTTP stream at once, not at garbage collection.
        return self._require_api().stream(request)

    async def busy_slots(self) -> int:
        """How many llama.cpp slots are decoding right now (from its /slots)."""
        request = urllib.request.Request(
            f"{self.address}/slots", headers={"Authorization": f"Bearer {self._key}"}
        )

        # No proxy handler: like the API calls, never through a proxy.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def fetch() -> list[dict]:
            with opener.open(request, timeout=5) as response:
                return json.load(response)

        return sum(1 for slot in await asyncio.to_thread(fetch) if slot.get("is_processing"))

    def _require_api(self) -> OpenAICompatProvider:
        if self._api is None:
            raise RuntimeError("local provider used before start()")
        return self._api
