"""Embedding settings: the built-in model's switch, its name, and per-vendor batch sizes."""

from __future__ import annotations

import pathlib

import pytest

from aigc.v1 import model_pb2
from server.config import ConfigError, Settings
from server.routing import build_router
from tests.proxies.env import isolated_env, write_config


def settings(**env: str) -> Settings:
    return Settings.from_env(isolated_env(**env))


def test_the_built_in_embedding_model_follows_the_local_switch_unless_told():
    assert settings(AIGC_LOCAL_ENABLED="true").local_embedding.enabled
    assert not settings(AIGC_LOCAL_ENABLED="false", AIGC_DEFAULT_MODEL="gpt-4o-mini").local_embedding.enabled
    only = settings(
        AIGC_LOCAL_ENABLED="false", AIGC_LOCAL_EMBEDDING_ENABLED="true", AIGC_DEFAULT_MODEL="gpt-4o"
    )
    assert only.local_embedding.enabled and not only.local.enabled
    off = settings(AIGC_LOCAL_ENABLED="true", AIGC_LOCAL_EMBEDDING_ENABLED="false")
    assert not off.local_embedding.enabled


def test_its_name_is_reserved_and_must_differ_from_the_chat_model():
    with pytest.raises(ConfigError, match="AIGC_LOCAL_EMBEDDING_MODEL_ID"):
        settings(AIGC_LOCAL_ENABLED="true", AIGC_LOCAL_EMBEDDING_MODEL_ID="smollm2")
    s = settings(AIGC_LOCAL_ENABLED="true", AIGC_LOCAL_EMBEDDING_MODEL_ID="minilm")
    router = build_router(s, environ={})
    assert router.default_embedding is not None and router.default_embedding.id == "minilm"
    assert list(router.resolve("minilm").capabilities) == [model_pb2.CAPABILITY_EMBEDDINGS]


def test_batch_sizes_per_vendor_and_from_the_file(tmp_path: pathlib.Path):
    config = write_config(
        tmp_path,
        """
        [upstreams.mine]
        kind = "gemini"
        base_url = "http://127.0.0.1:1"
        requires_key = false

        [upstreams.ollama]
        embedding_batch_size = 32
        """,
    )
    upstreams = settings(AIGC_LOCAL_ENABLED="true", AIGC_CONFIG=config).catalog.upstreams
    sizes = {name: u.embedding_batch_size for name, u in upstreams.items()}
    assert sizes["qwen"] == 10 and sizes["zhipu"] == 64 and sizes["ernie"] == 16
    assert sizes["openai"] == 2048 and sizes["gemini"] == 100 and sizes["mine"] == 100
    assert sizes["ollama"] == 32
    router = build_router(settings(AIGC_LOCAL_ENABLED="true", AIGC_CONFIG=config), environ={})
    assert router.resolve("text-embedding-v4").provider.max_embedding_inputs == 10


def test_a_bad_batch_size_is_refused(tmp_path: pathlib.Path):
    config = write_config(tmp_path, "[upstreams.ollama]\nembedding_batch_size = 0\n")
    with pytest.raises(ConfigError, match="embedding_batch_size"):
        settings(AIGC_LOCAL_ENABLED="true", AIGC_CONFIG=config)


def test_anthropic_models_cannot_be_declared_embedding_models(tmp_path: pathlib.Path):
    config = write_config(
        tmp_path,
        """
        [[models]]
        id = "claude-embed"
        upstream = "anthropic"
        upstream_model = "claude-haiku-4-5"
        capabilities = ["embeddings"]
        """,
    )
    with pytest.raises(ConfigError, match="embeddings"):
        settings(AIGC_LOCAL_ENABLED="true", AIGC_CONFIG=config)
