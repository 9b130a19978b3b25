"""Configuration: presets, the AIGC_CONFIG file, environment overrides, and every
start-up error - first as `Settings.from_env` sees them, then through the real
server process (exit code 2 and a message naming the file and key; ListModels
showing what is configured and whether its key is present, never the key)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import grpc
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc
from server.catalog import PRESETS
from server.config import ConfigError, Settings
from tests.proxies.env import isolated_env, write_config
from tests.support.processes import ROOT, python_env, running_server

KEY = "sk-cfgtest-SECRET-4f1c9a7e"
OTHER_KEY = "sk-cfgtest-OTHER-77aa01"


def settings(**env: str) -> Settings:
    return Settings.from_env(isolated_env(**env))


def config_error(tmp_path: pathlib.Path, text: str, **env: str) -> str:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        settings(AIGC_CONFIG=path, **env)
    message = str(caught.value)
    assert message.startswith(path), f"the message must name the file: {message}"
    return message


# --- presets and environment overrides ------------------------------------------------------------


def test_nothing_configured_keeps_the_local_model_default_and_lists_presets_not_ready():
    s = settings(AIGC_LOCAL_ENABLED="true")
    assert s.default_model == "smollm2"
    ids = {m.id: m.upstream for m in s.catalog.models}
    assert ids["gpt-4o-mini"] == "openai"
    assert ids["deepseek-chat"] == "deepseek"
    assert ids["qwen-plus"] == "qwen"
    assert ids["ernie-4.0-8k"] == "ernie"
    assert ids["glm-4-flash"] == "zhipu"
    assert ids["moonshot-v1-8k"] == "moonshot"
    assert ids["gemini-2.0-flash"] == "gemini"
    assert ids["claude-sonnet-4-5"] == "anthropic"
    assert not any(u.ready for u in s.catalog.upstreams.values() if u.requires_key)
    # Self-hosted presets list no models; vLLM and llama.cpp exist only with their URL.
    assert "ollama" in s.catalog.upstreams
    assert "vllm" not in s.catalog.upstreams and "llamacpp" not in s.catalog.upstreams
    assert {m.upstream for m in s.catalog.models}.isdisjoint({"ollama", "vllm", "llamacpp"})


def test_openai_api_key_makes_openai_ready_and_openai_base_url_moves_it():
    s = settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL="https://gateway.example/openai/v1")
    openai = s.catalog.upstreams["openai"]
    assert openai.ready and openai.api_key == KEY
    assert openai.base_url == "https://gateway.example/openai/v1"
    assert not s.catalog.upstreams["deepseek"].ready


def test_every_preset_reads_its_documented_variables():
    for preset in PRESETS:
        env = {preset.base_url_env: f"http://{preset.name}.example/v1"}
        if preset.api_key_env:
            env[preset.api_key_env] = KEY
        upstream = settings(AIGC_LOCAL_ENABLED="true", **env).catalog.upstreams[preset.name]
        assert upstream.base_url == f"http://{preset.name}.example/v1"
        assert upstream.ready
        assert upstream.api_key == (KEY if preset.api_key_env else "")


def test_vllm_and_llamacpp_appear_with_their_base_url_and_need_no_key():
    s = settings(
        VLLM_BASE_URL="http://gpu-box:8000/v1",
        LLAMACPP_BASE_URL="http://127.0.0.1:8080/v1",
        AIGC_LOCAL_ENABLED="true",
    )
    assert s.catalog.upstreams["vllm"].ready and s.catalog.upstreams["llamacpp"].ready


def test_aigc_presets_picks_presets():
    s = settings(AIGC_PRESETS="openai, deepseek", AIGC_LOCAL_ENABLED="true")
    assert set(s.catalog.upstreams) == {"openai", "deepseek"}
    assert {m.upstream for m in s.catalog.models} == {"openai", "deepseek"}
    assert settings(AIGC_PRESETS="none", AIGC_LOCAL_ENABLED="true").catalog.upstreams == {}


def test_default_model_without_local_is_the_first_ready_model():
    assert settings(DEEPSEEK_API_KEY=KEY).default_model == "deepseek-chat"
    assert settings(AIGC_DEFAULT_MODEL="kimi", MOONSHOT_API_KEY=KEY).default_model == "kimi"


def test_no_default_model_at_all_fails_fast():
    with pytest.raises(ConfigError, match="no default model"):
        settings()


def test_default_model_env_must_name_a_configured_model():
    with pytest.raises(ConfigError, match=r"AIGC_DEFAULT_MODEL = 'gpt-5-turbo-max': no such model"):
        settings(AIGC_DEFAULT_MODEL="gpt-5-turbo-max", AIGC_LOCAL_ENABLED="true")


def test_default_model_may_be_a_passthrough_name():
    assert settings(AIGC_DEFAULT_MODEL="openai/gpt-4.1-nano", OPENAI_API_KEY=KEY).default_model == (
        "openai/gpt-4.1-nano"
    )
    with pytest.raises(ConfigError, match="no such model"):
        settings(AIGC_DEFAULT_MODEL="openai/gpt-4.1-nano", OPENAI_API_KEY=KEY, AIGC_ALLOW_PASSTHROUGH="false")


def test_the_key_never_shows_in_reprs():
    s = settings(OPENAI_API_KEY=KEY, HTTPS_PROXY="http://user:proxy-pw@proxy:3128")
    assert KEY not in repr(s) and KEY not in str(s)
    assert "proxy-pw" not in repr(s)


# --- the file ---------------------------------------------------------------------------------


NEW_VENDOR = """
    default_model = "sf-qwen"

    [upstreams.siliconflow]
    kind = "openai"
    base_url = "https://api.siliconflow.cn/v1"
    api_key_env = "SILICONFLOW_API_KEY"
    timeout_seconds = 120
    max_retries = 1
    headers = { "X-Title" = "aigc-service" }

    [[models]]
    id = "sf-qwen"
    upstream = "siliconflow"
    upstream_model = "Qwen/Qwen2.5-72B-Instruct"
    aliases = ["qwen-72b"]
    description = "Qwen2.5 72B on SiliconFlow"
"""


def test_a_new_openai_compatible_vendor_is_a_config_entry(tmp_path):
    s = settings(AIGC_CONFIG=write_config(tmp_path, NEW_VENDOR), SILICONFLOW_API_KEY=KEY)
    upstream = s.catalog.upstreams["siliconflow"]
    assert (upstream.kind, upstream.base_url, upstream.api_key, upstream.timeout_seconds) == (
        "openai",
        "https://api.siliconflow.cn/v1",
        KEY,
        120.0,
    )
    assert upstream.max_retries == 1 and dict(upstream.headers) == {"X-Title": "aigc-service"}
    model = next(m for m in s.catalog.models if m.id == "sf-qwen")
    assert model.upstream_model == "Qwen/Qwen2.5-72B-Instruct" and model.aliases == ("qwen-72b",)
    assert s.default_model == "sf-qwen"
    # Presets are still there next to it.
    assert "gpt-4o" in {m.id for m in s.catalog.models}


def test_the_shipped_example_file_is_valid(tmp_path):
    example = ROOT / "config" / "aigc.example.toml"
    s = settings(AIGC_CONFIG=str(example), AIGC_LOCAL_ENABLED="true")
    assert s.catalog.path == str(example)
    assert s.catalog.models


def test_file_overrides_a_preset_field_by_field_and_its_models_win(tmp_path):
    path = write_config(
        tmp_path,
        """
        [upstreams.openai]
        timeout_seconds = 30

        [[models]]
        id = "gpt-4o"
        upstream = "openai"
        upstream_model = "gpt-4o-2024-11-20"
        """,
    )
    s = settings(AIGC_CONFIG=path, OPENAI_API_KEY=KEY, AIGC_LOCAL_ENABLED="true")
    openai = s.catalog.upstreams["openai"]
    assert openai.timeout_seconds == 30 and openai.base_url == "https://api.openai.com/v1"
    gpt4o = [m for m in s.catalog.models if m.id == "gpt-4o"]
    assert len(gpt4o) == 1 and gpt4o[0].upstream_model == "gpt-4o-2024-11-20"


def test_empty_presets_list_leaves_only_the_file(tmp_path):
    path = write_config(tmp_path, "presets = []\n" + NEW_VENDOR)
    s = settings(AIGC_CONFIG=path, SILICONFLOW_API_KEY=KEY)
    assert set(s.catalog.upstreams) == {"siliconflow"}
    assert [m.id for m in s.catalog.models] == ["sf-qwen"]


def test_models_may_use_a_preset_upstream_and_env_beats_file_for_the_default(tmp_path):
    path = write_config(
        tmp_path,
        """
        default_model = "ds"
        [[models]]
        id = "ds"
        upstream = "deepseek"
        upstream_model = "deepseek-chat"
        """,
    )
    s = settings(AIGC_CONFIG=path, AIGC_DEFAULT_MODEL="gpt-4o")
    assert s.default_model == "gpt-4o"
    assert settings(AIGC_CONFIG=path).default_model == "ds"


# --- every validation error ------------------------------------------------------------------


def test_unknown_kind(tmp_path):
    message = config_error(
        tmp_path,
        """
        [upstreams.acme]
        kind = "opnai"
        base_url = "https://acme.example/v1"
        api_key_env = "ACME_KEY"
        """,
        AIGC_LOCAL_ENABLED="true",
    )
    assert "[upstreams.acme]" in message and "kind = 'opnai': unknown kind" in message


@pytest.mark.parametrize(
    ("table", "missing"),
    [
        ('base_url = "https://a.example/v1"\napi_key_env = "A_KEY"', "'kind'"),
        ('kind = "openai"\napi_key_env = "A_KEY"', "'base_url'"),
        ('kind = "openai"\nbase_url = "https://a.example/v1"', "'api_key_env'"),
    ],
)
def test_missing_required_upstream_key(tmp_path, table, missing):
    message = config_error(tmp_path, f"[upstreams.acme]\n{table}\n", AIGC_LOCAL_ENABLED="true")
    assert f"[upstreams.acme]: missing required key {missing}" in message


@pytest.mark.parametrize(
    ("entry", "missing"),
    [('upstream = "openai"', "'id'"), ('id = "x"', "'upstream'")],
)
def test_missing_required_model_key(tmp_path, entry, missing):
    message = config_error(tmp_path, f"[[models]]\n{entry}\n", AIGC_LOCAL_ENABLED="true")
    assert "[[models]]" in message and f"missing required key {missing}" in message


def test_keyless_upstream_needs_requires_key_false(tmp_path):
    s = settings(
        AIGC_CONFIG=write_config(
            tmp_path,
            """
            default_model = "mine"
            [upstreams.box]
            kind = "openai"
            base_url = "http://gpu-box:8000/v1"
            requires_key = false
            [[models]]
            id = "mine"
            upstream = "box"
            """,
        )
    )
    assert s.catalog.upstreams["box"].ready and s.default_model == "mine"
    assert next(m for m in s.catalog.models if m.id == "mine").upstream_model == "mine"


def test_duplicate_model_id(tmp_path):
    message = config_error(
        tmp_path,
        """
        [[models]]
        id = "twin"
        upstream = "openai"
        [[models]]
        id = "twin"
        upstream = "deepseek"
        """,
        AIGC_LOCAL_ENABLED="true",
    )
    assert "model name 'twin' is already used by" in message


def test_duplicate_alias(tmp_path):
    message = config_error(
        tmp_path,
        """
        [[models]]
        id = "a"
        upstream = "openai"
        aliases = ["fast"]
        [[models]]
        id = "b"
        upstream = "deepseek"
        aliases = ["fast"]
        """,
        AIGC_LOCAL_ENABLED="true",
    )
    assert "id='b'" in message and "model name 'fast' is already used by" in message


def test_the_local_model_name_is_taken(tmp_path):
    message = config_error(
        tmp_path, '[[models]]\nid = "smollm2"\nupstream = "openai"\n', AIGC_LOCAL_ENABLED="true"
    )
    assert "already used by the built-in local model (AIGC_LOCAL_MODEL_ID)" in message


def test_default_model_in_the_file_must_be_configured(tmp_path):
    message = config_error(tmp_path, 'default_model = "nope"\n', AIGC_LOCAL_ENABLED="true")
    assert "default_model = 'nope': no such model" in message


def test_api_key_written_in_the_file_is_refused_without_echoing_it(tmp_path):
    message = config_error(
        tmp_path,
        f"""
        [upstreams.acme]
        kind = "openai"
        base_url = "https://acme.example/v1"
        api_key = "{KEY}"
        """,
        AIGC_LOCAL_ENABLED="true",
    )
    assert "api_key must not be written in the file" in message and "api_key_env" in message
    assert KEY not in message


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it(tmp_path):
    message = config_error(
        tmp_path,
        f"""
        [upstreams.acme]
        kind = "openai"
        base_url = "https://acme.example/v1"
        api_key_env = "{KEY}"
        """,
        AIGC_LOCAL_ENABLED="true",
    )
    assert "api_key_env must be the NAME of an environment variable" in message
    assert KEY not in message


def test_a_credential_header_in_the_file_is_refused_and_header_envs_work(tmp_path):
    message = config_error(
        tmp_path,
        f"""
        [upstreams.acme]
        kind = "openai"
        base_url = "https://acme.example/v1"
        api_key_env = "ACME_KEY"
        headers = {{ "X-Api-Key" = "{KEY}" }}
        """,
        AIGC_LOCAL_ENABLED="true",
    )
    assert "headers.X-Api-Key looks like a credential" in message and KEY not in message

    path = write_config(
        tmp_path,
        """
        [upstreams.acme]
        kind = "openai"
        base_url = "https://acme.example/v1"
        api_key_env = "ACME_KEY"
        header_envs = { "X-Api-Key" = "ACME_HEADER_KEY" }
        """,
        name="ok.toml",
    )
    s = settings(AIGC_CONFIG=path, ACME_KEY=KEY, ACME_HEADER_KEY=OTHER_KEY, AIGC_LOCAL_ENABLED="true")
    acme = s.catalog.upstreams["acme"]
    assert acme.headers["X-Api-Key"] == OTHER_KEY
    assert set(acme.secrets) == {KEY, OTHER_KEY}
    assert OTHER_KEY not in repr(s)


def test_header_envs_naming_an_unset_variable_leaves_the_upstream_not_ready(tmp_path):
    path = write_config(
        tmp_path,
        """
        [upstreams.acme]
        kind = "openai"
        base_url = "https://acme.example/v1"
        api_key_env = "ACME_KEY"
        header_envs = { "X-Token" = "ACME_TOKEN" }
        """,
    )
    acme = settings(AIGC_CONFIG=path, AIGC_LOCAL_ENABLED="true").catalog.upstreams["acme"]
    assert not acme.ready and acme.missing_env == ("ACME_KEY", "ACME_TOKEN")
    acme = settings(AIGC_CONFIG=path, AIGC_LOCAL_ENABLED="true", ACME_KEY=KEY).catalog.upstreams["acme"]
    assert not acme.ready and acme.missing_env == ("ACME_TOKEN",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('defualt_model = "x"\n', "unknown key 'defualt_model'"),
        (
            '[upstreams.openai]\napi_base = "https://x.example"\n',
            "[upstreams.openai]: unknown key 'api_base'",
        ),
        ('[[models]]\nid = "x"\nupstream = "openai"\nmodel = "y"\n', "unknown key 'model'"),
        ('[[models]]\nid = "x"\nupstream = "acme"\n', "upstream = 'acme': no [upstreams.acme] table"),
        ('[[models]]\nid = "x"\nupstream = "vllm"\n', "preset 'vllm' is not enabled"),
        ('presets = ["openai", "bard"]\n', "unknown preset 'bard'"),
        ("[upstreams.openai]\ntimeout_seconds = -1\n", "timeout_seconds must be a number above 0"),
        ('[upstreams.openai]\nmax_retries = "3"\n', "max_retries must be a number (int)"),
        ('[upstreams.openai]\nrequires_key = "no"\n', "requires_key must be true or false"),
        ('[upstreams.openai]\nkind = "gemini"\n', "preset 'openai' is 'openai'"),
        ('[upstreams.openai]\nbase_url = "api.openai.com"\n', "expected an http:// or https:// URL"),
        ('[upstreams.local]\nkind = "openai"\n', "'local' is the built-in model's provider"),
        ('[[models]]\nid = "has space"\nupstream = "openai"\n', "id must not contain spaces"),
        ("allow_passthrough = 1\n", "allow_passthrough must be true or false"),
        ("this is not toml\n", "not valid TOML"),
    ],
)
def test_file_mistakes_name_the_file_and_key(tmp_path, text, expected):
    assert expected in config_error(tmp_path, text, AIGC_LOCAL_ENABLED="true")


def test_missing_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"AIGC_CONFIG='.*nowhere.toml': file not found"):
        settings(AIGC_CONFIG=str(tmp_path / "nowhere.toml"), AIGC_LOCAL_ENABLED="true")


def test_unknown_preset_in_env():
    with pytest.raises(ConfigError, match="AIGC_PRESETS: unknown preset 'bard'"):
        settings(AIGC_PRESETS="openai,bard", AIGC_LOCAL_ENABLED="true")


# --- through the real server process ---------------------------------------------------------


def run_server_expecting_failure(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=python_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_server_refuses_to_start_on_a_bad_file_and_says_where(tmp_path):
    path = write_config(tmp_path, '[upstreams.acme]\nkind = "opnai"\nbase_url = "https://a.example"\n')
    result = run_server_expecting_failure(isolated_env(AIGC_CONFIG=path, AIGC_LOCAL_ENABLED="true"))
    assert result.returncode == 2
    assert f"bad configuration: {path} [upstreams.acme]: kind = 'opnai': unknown kind" in result.stderr


def test_server_refuses_a_key_in_the_file_and_never_prints_it(tmp_path):
    path = write_config(
        tmp_path, f'[upstreams.acme]\nkind = "openai"\nbase_url = "https://a.example"\napi_key = "{KEY}"\n'
    )
    result = run_server_expecting_failure(isolated_env(AIGC_CONFIG=path, AIGC_LOCAL_ENABLED="true"))
    assert result.returncode == 2
    assert "api_key must not be written in the file" in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_list_models_through_the_server_shows_presets_readiness_and_never_the_key(tmp_path):
    path = write_config(tmp_path, NEW_VENDOR)
    env = isolated_env(
        AIGC_CONFIG=path,
        AIGC_LOG_LEVEL="DEBUG",
        OPENAI_API_KEY=KEY,
        SILICONFLOW_API_KEY=OTHER_KEY,
    )
    with running_server(env) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
            response = stub.ListModels(pb.ListModelsRequest(page_size=1000), timeout=10)
        output = server.output()
    models = {m.id: m for m in response.models}
    assert response.models[0].id == "sf-qwen" and response.models[0].is_default
    assert sum(m.is_default for m in response.models) == 1
    sf = models["sf-qwen"]
    assert (sf.provider, sf.upstream_model, list(sf.aliases), sf.ready) == (
        "siliconflow",
        "Qwen/Qwen2.5-72B-Instruct",
        ["qwen-72b"],
        True,
    )
    assert sf.description == "Qwen2.5 72B on SiliconFlow"
    assert models["gpt-4o-mini"].ready and models["gpt-4o-mini"].provider == "openai"
    for model_id, provider in [
        ("deepseek-chat", "deepseek"),
        ("qwen-plus", "qwen"),
        ("ernie-4.0-8k", "ernie"),
        ("glm-4-flash", "zhipu"),
        ("moonshot-v1-8k", "moonshot"),
        ("gemini-2.0-flash", "gemini"),
        ("claude-sonnet-4-5", "anthropic"),
    ]:
        assert models[model_id].provider == provider and not models[model_id].ready, model_id
    assert list(models["moonshot-v1-8k"].aliases) == ["kimi"]
    assert "smollm2" not in models  # the local model is off in this run
    serialized = response.SerializeToString()
    for secret in (KEY, OTHER_KEY):
        assert secret.encode() not in serialized
        assert secret not in output
    # The start-up log names each upstream and what to do, not the key.
    assert "upstream deepseek (openai) at https://api.deepseek.com: not ready: set DEEPSEEK_API_KEY" in output


# --- capabilities ---------------------------------------------------------------------------------


def test_capabilities_come_from_presets_the_model_entry_or_its_upstream(tmp_path):
    text = """
        presets = ["openai"]
        [upstreams.box]
        kind = "openai"
        base_url = "http://10.0.0.5:8000/v1"
        requires_key = false
        capabilities = ["tools", "raw_completion"]
        [[models]]
        id = "box-default"
        upstream = "box"
        [[models]]
        id = "box-vision"
        upstream = "box"
        capabilities = ["vision"]
    """
    s = settings(AIGC_CONFIG=write_config(tmp_path, text), OPENAI_API_KEY=KEY)
    models = {m.id: m.capabilities for m in s.catalog.models}
    assert models["box-default"] == {"tools", "raw_completion"}
    assert models["box-vision"] == {"vision"}
    assert models["o4-mini"] == {"tools", "vision", "json_output", "json_schema", "reasoning"}
    assert s.catalog.upstreams["openai"].max_tokens_param == "max_completion_tokens"
    assert s.catalog.upstreams["box"].max_tokens_param == "max_tokens"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('capabilities = ["telepathy"]', "unknown capability 'telepathy'"),
        ('capabilities = "tools"', "capabilities must be a list"),
        ('max_tokens_param = "tokens"', "max_tokens_param must be max_tokens or max_completion_tokens"),
    ],
)
def test_bad_capabilities_and_token_param_stop_the_server(tmp_path, table, expected):
    text = f"""
        [upstreams.box]
        kind = "openai"
        base_url = "http://10.0.0.5:8000/v1"
        requires_key = false
        {table}
    """
    assert expected in config_error(tmp_path, text)


def test_a_capability_the_kind_cannot_translate_stops_the_server(tmp_path):
    text = """
        [upstreams.claude]
        kind = "anthropic"
        base_url = "https://api.anthropic.com"
        api_key_env = "CLAUDE_KEY"
        [[models]]
        id = "c"
        upstream = "claude"
        capabilities = ["raw_completion"]
    """
    assert "cannot translate raw_completion" in config_error(tmp_path, text)
