"""The built-in `local` provider: a GGUF model run by llama.cpp.

llama.cpp's own HTTP server (through the `xllamacpp` wheel) runs inside this
process, bound to 127.0.0.1 on a free port and protected by a random API key,
and we talk to it with the same OpenAI-protocol adapter as any remote vendor.
That gives us llama.cpp's continuous batching across parallel slots, its chat
templates, JSON-schema grammars and tool-call parser, and its exact token
counts, and it gives cancellation for free: closing the HTTP stream makes
llama.cpp stop decoding for that request.

Tools and structured output with SmolLM2 (what we found, and why the code
below does what it does):
- JSON output is llama.cpp's grammar-constrained sampling: `response_format`
  json_schema compiles the schema to a grammar, so the answer always parses
  and matches, even from a 135M model.
- Tool calling needs a chat template that renders tool calls: llama.cpp picks
  its tool-call parser by rendering the template with sample conversations,
  and SmolLM2's own template renders none (tools were silently ignored). We
  load local_chat_template.jinja (ChatML + Hermes-style `<tool_call>` tags).
- With tool choice "required", llama.cpp's grammar still allows prose before
  the call, and a 135M model fills the token budget with prose; so we start
  the answer for it with `<tool_call>` (an assistant prefill), after which the
  grammar forces a valid call, and `</tool_call>` as a stop sequence makes it
  one call (the model would otherwise repeat it until the budget cuts the
  last one). A named function is sent as that one tool, required (llama.cpp
  treats a named choice as "auto"). With "auto" the model practically never
  calls a tool by itself: you get text.
- Reasoning is off (`enable_reasoning = 0`): llama.cpp's default turns
  "thinking" on for every request, and SmolLM2 does not reason.

What a caller may add through vendor_params is a bounded allowlist
(local_params.py says why). The caller's deadline reaches llama.cpp twice:
the HTTP stream is closed when it passes (llama.cpp cancels the slot's task
when it sees the closed connection), and it is sent as llama.cpp's own
`t_max_predict_ms`, which stops a generation past that time by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import secrets
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import xllamacpp

from aigc.v1 import model_pb2, tool_pb2
from server.config import LocalModelSettings, smollm2_path
from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import Chunk, ProviderRequest
from server.providers.http import HttpTransport
from server.providers.local_params import LocalParams
from server.providers.local_slots import SlotGate
from server.providers.openai import OpenAICompatProvider, wire

log = logging.getLogger(__name__)

CHAT_TEMPLATE = pathlib.Path(__file__).with_name("local_chat_template.jinja")

#: What the built-in model offers (see the module docstring).
LOCAL_CAPABILITIES = frozenset(
    {
        model_pb2.CAPABILITY_TOOLS,
        model_pb2.CAPABILITY_JSON_OUTPUT,
        model_pb2.CAPABILITY_JSON_SCHEMA,
        model_pb2.CAPABILITY_RAW_COMPLETION,
    }
)
_TOOL_CALL_PREFILL = "<tool_call>\n"
# No token of the model's vocabulary is longer than this many bytes, so a
# request larger than context_tokens times it cannot fit the context: it is
# refused before llama.cpp spends seconds tokenizing it (a 10 MB prompt once
# kept a core busy for 30 s before llama.cpp said it was too long).
_MAX_BYTES_PER_TOKEN = 64
_TOOL_CALL_END = "</tool_call>"


class LocalProvider(OpenAICompatProvider):
    # llama.cpp's time limit is set from the caller's deadline (stream()).
    reserved_vendor_keys = wire.RESERVED_KEYS | {"t_max_predict_ms", "t_max_prompt_ms"}

    def __init__(self, settings: LocalModelSettings, *, verbose: bool = False) -> None:
        # One retry, for the one failure that does pass: a pooled keep-alive
        # connection that llama.cpp closed for idleness just as we reuse it
        # ("Server disconnected without sending a response"). Retries happen
        # only before any output (server/core/retry.py), so nothing is
        # generated twice. trust_env=False: loopback traffic never goes
        # through a proxy, whatever HTTP_PROXY/ALL_PROXY/NO_PROXY say.
        super().__init__("local", base_url="http://127.0.0.1", api_key="", max_retries=1, trust_env=False)
        self._settings = settings
        self._verbose = verbose
        # llama.cpp's slots, shared with every worker (server/providers/local_slots.py):
        # beyond them, requests wait here, at most queue_timeout_seconds.
        self._slots = SlotGate(settings.parallel, settings.slots_dir)
        self._server: xllamacpp.Server | None = None
        self.address = ""
        self._params = LocalParams(settings.context_tokens)

    async def start(self) -> None:
        if self._settings.url:
            # Another process runs the model (the supervisor of several workers).
            self.address, self.api_key = self._settings.url, self._settings.key
        else:
            # Loading takes ~0.5 s of C++ work: keep the event loop free meanwhile.
            self._server, self.address, self.api_key = await asyncio.to_thread(
                start_llama_server, self._settings, self._verbose
            )
        self.base_url = f"{self.address}/v1"
        self.base_urls, self.api_keys = (self.base_url,), (self.api_key,)
        await super().start()

    def _new_transport(self, base_url: str, key: str) -> HttpTransport:
        return HttpTransport(
            self.name,
            base_url,
            self.auth_headers(key),
            timeouts=self.timeouts,
            trust_env=False,
            # Below llama.cpp's own keep-alive timeout (5 s), so we rarely
            # reuse a connection it is about to close.
            keepalive_expiry=2.0,
            secrets=self.secrets,
        )

    async def close(self) -> None:
        await super().close()
        # Dropping the last reference stops llama.cpp's HTTP and decode loops.
        self._server = None

    def ready(self) -> bool:
        return bool(self.address)

    def validate(self, request: ProviderRequest) -> Mapping[str, str]:
        return {**super().validate(request), **self._params.problems(request.vendor_params)}

    @contextlib.asynccontextmanager
    async def stream(self, request: ProviderRequest) -> AsyncIterator[AsyncIterator[Chunk]]:
        size = request.chat.ByteSize() if request.chat is not None else len((request.prompt or "").encode())
        context = self._settings.context_tokens
        if size > context * _MAX_BYTES_PER_TOKEN:
            raise UpstreamError(
                UpstreamFailure.CONTEXT_TOO_LONG,
                f"the request ({size} bytes) cannot fit the local model's context of {context} "
                "tokens (AIGC_LOCAL_CONTEXT_TOKENS)",
                provider=self.name,
            )
        wait = self._settings.queue_timeout_seconds
        if request.deadline is not None:
            wait = min(wait, max(0.0, request.deadline - asyncio.get_running_loop().time()))
        # Entered by hand: a TimeoutError from the stream itself is not "no slot".
        slot = self._slots.hold(wait)
        try:
            await slot.__aenter__()
        except TimeoutError:
            raise UpstreamError(
                UpstreamFailure.RATE_LIMITED,
                f"the local model's {self._settings.parallel} slots are all busy "
                f"(waited {wait:.3g}s, AIGC_LOCAL_QUEUE_TIMEOUT_SECONDS)",
                provider=self.name,
                retry_after_seconds=1.0,
                # Waiting again here would only make the caller wait twice.
                retryable=False,
            ) from None
        try:
            async with super().stream(_with_time_limit(request)) as chunks:
                yield chunks
        finally:
            await slot.__aexit__(None, None, None)

    def chat_body(self, request: ProviderRequest) -> dict[str, Any]:
        body = super().chat_body(request)
        chat = request.chat
        assert chat is not None
        choice = chat.tool_choice
        if not chat.tools or not (choice.function_name or choice.mode == tool_pb2.ToolChoice.MODE_REQUIRED):
            return body
        # A call is required (see the module docstring): one tool if named,
        # and the answer begun with the call's opening tag.
        if choice.function_name:
            body["tools"] = [t for t in body["tools"] if t["function"]["name"] == choice.function_name]
        body["tool_choice"] = "required"
        body["messages"].append({"role": "assistant", "content": _TOOL_CALL_PREFILL})
        # One call, closed: left alone, the model repeats the call until the
        # token budget cuts the last one mid-arguments.
        body["stop"] = [*body.get("stop", ()), _TOOL_CALL_END]
        return body

    async def busy_slots(self) -> int:
        """How many llama.cpp slots are decoding right now (from its /slots)."""
        request = urllib.request.Request(
            f"{self.address}/slots", headers={"Authorization": f"Bearer {self.api_key}"}
        )

        # No proxy handler: like the API calls, never through a proxy.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def fetch() -> list[dict]:
            with opener.open(request, timeout=5) as response:
                return json.load(response)

        return sum(1 for slot in await asyncio.to_thread(fetch) if slot.get("is_processing"))


def _with_time_limit(request: ProviderRequest) -> ProviderRequest:
    """`request` with llama.cpp's `t_max_predict_ms` set to what is left of the caller's deadline.

    Closing the stream at the deadline (providers/http.py) is what stops
    llama.cpp first; this limit is llama.cpp's own, so the generation also
    ends if the closed connection goes unnoticed (llama.cpp applies it once
    the answer has a line break, counted from the first token).
    """
    if request.deadline is None:
        return request
    left = request.deadline - asyncio.get_running_loop().time()
    limit = max(1, int(left * 1000))
    return dataclasses.replace(request, vendor_params={**request.vendor_params, "t_max_predict_ms": limit})


def start_llama_server(
    settings: LocalModelSettings, verbose: bool = False
) -> tuple[xllamacpp.Server, str, str]:
    """llama.cpp's server for the built-in model, on 127.0.0.1: (server, its URL, its API key).

    The port is loopback-only and the random key keeps other local users off
    it. Keep the returned server referenced: dropping it stops llama.cpp.
    """
    path = settings.path or str(smollm2_path())
    if not os.path.isfile(path):
        raise FileNotFoundError(f"local model file not found: {path}")
    key = secrets.token_urlsafe(24)
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # any free port; read back from listening_address
    params.api_keys = [key]
    params.n_parallel = settings.parallel
    # llama.cpp splits n_ctx across slots; we configure it per slot.
    params.n_ctx = settings.context_tokens * settings.parallel
    if settings.threads:
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
    params.endpoint_slots = True
    params.use_jinja = True
    params.chat_template = CHAT_TEMPLATE.read_text()
    params.enable_reasoning = 0
    # llama.cpp logs several lines per request to stderr; keep them for
    # AIGC_LOG_LEVEL=DEBUG only.
    params.verbosity = 3 if verbose else 0
    server = xllamacpp.Server(params)
    address = server.listening_address
    log.info(
        "local model loaded", extra={"model_path": path, "llama_server": address, "slots": settings.parallel}
    )
    return server, address, key


__all__ = ["CHAT_TEMPLATE", "LOCAL_CAPABILITIES", "LocalProvider", "start_llama_server"]
