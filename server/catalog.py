"""What upstreams and models exist: built-in presets, the config file, env overrides.

    load_catalog(env, local_model_id)     -> Catalog (upstreams, models, default, passthrough)
        1. PRESETS                            built in; each knows its key's env var
        2. the TOML file named by AIGC_CONFIG  adds upstreams/models, overrides presets
        3. environment                        keys, <PRESET>_BASE_URL, AIGC_PRESETS,
                                              AIGC_DEFAULT_MODEL, AIGC_ALLOW_PASSTHROUGH

Each model has capabilities (tools, vision, json_output, json_schema,
reasoning, raw_completion, embeddings - aigc.v1.Capability): presets list what the
vendor documents for the model, a [[models]] entry may say `capabilities =
[...]`, and an upstream's own `capabilities` (default: everything its kind
translates) apply to its passthrough models and to entries that say nothing.

Everything is checked here, once, at start-up: a mistake raises `ConfigError`
with the file and key (or the variable) in its message, and the server does not
start. API keys are only ever read from the environment - the file names the
variable (`api_key_env`), never holds the key - and the key's value is kept out
of every repr. docs/configuration.md describes the format for operators.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from server.envvars import ConfigError, parse_bool, setting

Kind = Literal["openai", "gemini", "anthropic"]
KINDS: tuple[Kind, ...] = ("openai", "gemini", "anthropic")

# Upper case, as environment variables are named by convention. Also what
# tells a variable name from a key pasted by mistake (keys have lower case or
# punctuation), so the check can refuse without ever echoing the value.
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# Header names whose values are credentials: they come from `header_envs`.
_SECRET_HEADER = re.compile(
    r"(^|[-_])(authorization|api[-_]?key|token|secret|cookie|password)($|[-_])", re.IGNORECASE
)


@dataclasses.dataclass(frozen=True)
class Upstream:
    """One vendor endpoint: everything needed to build its provider."""

    # Name in ListModels, responses and `upstream/model` passthrough, e.g. "deepseek".
    name: str
    kind: Kind
    base_url: str
    # Name of the environment variable holding the key ("" = none).
    api_key_env: str
    # False for servers without auth (Ollama, vLLM): ready without a key.
    requires_key: bool
    # The whole call at most this long (the caller's deadline may be shorter).
    timeout_seconds: float
    max_retries: int
    # Extra HTTP headers sent with every request (values may be secrets).
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    # Names of the headers whose values came from header_envs (secrets).
    secret_headers: tuple[str, ...] = ()
    # The key itself, read from `api_key_env`. Never printed.
    api_key: str = dataclasses.field(default="", repr=False)
    # Variables this upstream needs that are unset (its key, header_envs): not ready.
    missing_env: tuple[str, ...] = ()
    # Where it was defined, for messages: "preset" or "FILE [upstreams.NAME]".
    source: str = "preset"
    # Capability names of its passthrough models and of models that list none.
    capabilities: frozenset[str] = dataclasses.field(default_factory=lambda: KIND_CAPABILITIES["openai"])
    # openai kind: the body field for max_output_tokens ("max_tokens", or
    # OpenAI's own "max_completion_tokens", which its reasoning models need).
    max_tokens_param: str = "max_tokens"
    # openai kind: send the reasoning of earlier assistant turns back as
    # `reasoning_content` (DeepSeek's thinking mode refuses a tool loop
    # without it; OpenAI has no such field).
    reasoning_in_history: bool = False
    # Seconds to connect; to the first event of an answer (a thinking model
    # can be silent a while); between two events once it streams.
    connect_timeout_seconds: float = 10.0
    first_token_timeout_seconds: float = 120.0
    idle_timeout_seconds: float = 60.0
    # More base URLs and keys of the same vendor account(s): requests are
    # balanced over every (base URL, key) pair, and a failing pair is left
    # out for a while (server/providers/endpoints.py). The first of each is
    # `base_url` / `api_key`.
    base_urls: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    # The most texts one embeddings call may carry at this vendor; larger
    # batches are split and the vectors joined in order.
    embedding_batch_size: int = 2048

    @property
    def ready(self) -> bool:
        return not self.missing_env

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be shown: the keys and secret header values."""
        values = [self.api_key, *self.api_keys, *(self.headers[h] for h in self.secret_headers)]
        return tuple(v for v in values if v)


@dataclasses.dataclass(frozen=True)
class Model:
    # The name callers use.
    id: str
    upstream: str
    # The model's name at the vendor.
    upstream_model: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    # Capability names (see CAPABILITIES).
    capabilities: frozenset[str] = frozenset()
    # The most tokens one answer may ask for (also the amount used when a
    # request names none); None: the vendor's own limit.
    max_output_tokens: int | None = None
    # Model ids to try, in order, when this one fails before answering.
    fallbacks: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Catalog:
    # Upstreams that serve models or passthrough, in definition order (presets first).
    upstreams: Mapping[str, Upstream]
    models: tuple[Model, ...]
    # A model id or alias, `upstream/model`, or "" (the caller of load_catalog picks).
    default_model: str
    # Whether `upstream/model` reaches any model of a configured upstream.
    allow_passthrough: bool
    # The config file that was read, "" if none.
    path: str = ""


# --- presets ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    kind: Kind
    base_url: str
    # Env var holding the key; for keyless servers an optional one (vLLM --api-key).
    api_key_env: str
    requires_key: bool
    # (id, upstream model, aliases, description, capabilities); ids are what callers send.
    models: tuple[tuple[str, str, tuple[str, ...], str, frozenset[str]], ...] = ()
    # Keyless presets without a usual address are enabled only when
    # <NAME>_BASE_URL is set (nothing to talk to otherwise).
    needs_base_url_env: bool = False
    timeout_seconds: float = 600.0
    max_retries: int = 2
    max_tokens_param: str = "max_tokens"
    reasoning_in_history: bool = False
    # The most texts per embeddings call that the vendor documents; None:
    # the kind's default (EMBEDDING_BATCH_SIZES).
    embedding_batch_size: int | None = None

    @property
    def base_url_env(self) -> str:
        return f"{self.name.upper()}_BASE_URL"


# aigc.v1.Capability names, as written in the config file.
CAPABILITIES = ("tools", "vision", "json_output", "json_schema", "reasoning", "raw_completion", "embeddings")
# What each kind's adapter can translate at all (Anthropic has no embeddings API).
KIND_CAPABILITIES: dict[Kind, frozenset[str]] = {
    "openai": frozenset(CAPABILITIES),
    "gemini": frozenset(CAPABILITIES) - {"raw_completion"},
    "anthropic": frozenset(CAPABILITIES) - {"raw_completion", "embeddings"},
}
# Texts per embeddings call, per kind, unless the preset or the file says
# otherwise: OpenAI takes 2048 inputs, Gemini's batchEmbedContents 100.
EMBEDDING_BATCH_SIZES: dict[Kind, int] = {"openai": 2048, "gemini": 100, "anthropic": 2048}


def _caps(*names: str) -> frozenset[str]:
    return frozenset(names)


# What vendors document for their models (checked against their docs, not the live APIs).
_CHAT_VISION_JSON = _caps("tools", "vision", "json_output", "json_schema")
_TOOLS_JSON = _caps("tools", "json_output")
_EMBEDDINGS = _caps("embeddings")

PRESETS: tuple[Preset, ...] = (
    Preset(
        "openai",
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        True,
        (
            ("gpt-4o-mini", "gpt-4o-mini", (), "OpenAI GPT-4o mini", _CHAT_VISION_JSON),
            ("gpt-4o", "gpt-4o", (), "OpenAI GPT-4o", _CHAT_VISION_JSON),
            ("gpt-4.1-mini", "gpt-4.1-mini", (), "OpenAI GPT-4.1 mini", _CHAT_VISION_JSON),
            ("gpt-4.1", "gpt-4.1", (), "OpenAI GPT-4.1", _CHAT_VISION_JSON),
            ("o4-mini", "o4-mini", (), "OpenAI o4-mini reasoning", _CHAT_VISION_JSON | {"reasoning"}),
            (
                "text-embedding-3-small",
                "text-embedding-3-small",
                (),
                "OpenAI embeddings, 1536 dimensions (shortenable)",
                _EMBEDDINGS,
            ),
            (
                "text-embedding-3-large",
                "text-embedding-3-large",
                (),
                "OpenAI embeddings, 3072 dimensions (shortenable)",
                _EMBEDDINGS,
            ),
        ),
        # Its reasoning models refuse `max_tokens`; every current OpenAI model takes this.
        max_tokens_param="max_completion_tokens",
    ),
    Preset(
        "deepseek",
        "openai",
        "https://api.deepseek.com",
        "DEEPSEEK_API_KEY",
        True,
        (
            ("deepseek-chat", "deepseek-chat", (), "DeepSeek-V3 chat", _TOOLS_JSON),
            (
                "deepseek-reasoner",
                "deepseek-reasoner",
                (),
                "DeepSeek-R1 reasoning (reasoning_content)",
                _TOOLS_JSON | {"reasoning"},
            ),
        ),
        # Its thinking mode answers 400 ("The `reasoning_content` in the
        # thinking mode must be passed back to the API") when an assistant
        # turn that called tools comes back without its reasoning.
        reasoning_in_history=True,
    ),
    Preset(
        "qwen",
        "openai",
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        "DASHSCOPE_API_KEY",
        True,
        (
            ("qwen-plus", "qwen-plus", (), "Alibaba Qwen Plus (DashScope compatible mode)", _TOOLS_JSON),
            ("qwen-turbo", "qwen-turbo", (), "Alibaba Qwen Turbo (DashScope compatible mode)", _TOOLS_JSON),
            ("qwen-max", "qwen-max", (), "Alibaba Qwen Max (DashScope compatible mode)", _TOOLS_JSON),
            (
                "qwen-vl-plus",
                "qwen-vl-plus",
                (),
                "Alibaba Qwen VL Plus, image input (DashScope compatible mode)",
                _caps("vision"),
            ),
            (
                "text-embedding-v4",
                "text-embedding-v4",
                (),
                "Alibaba text-embedding-v4, 1024 dimensions by default (DashScope compatible mode)",
                _EMBEDDINGS,
            ),
            (
                "text-embedding-v3",
                "text-embedding-v3",
                (),
                "Alibaba text-embedding-v3, 1024 dimensions by default (DashScope compatible mode)",
                _EMBEDDINGS,
            ),
        ),
        # DashScope's compatible mode takes at most 10 texts per call (v3, v4).
        embedding_batch_size=10,
    ),
    Preset(
        "ernie",
        "openai",
        "https://qianfan.baidubce.com/v2",
        "QIANFAN_API_KEY",
        True,
        (
            (
                "ernie-4.0-8k",
                "ernie-4.0-8k",
                ("ernie-bot-4",),
                "Baidu ERNIE 4.0 (Qianfan v2)",
                _caps("tools"),
            ),
            (
                "ernie-4.0-turbo-8k",
                "ernie-4.0-turbo-8k",
                (),
                "Baidu ERNIE 4.0 Turbo (Qianfan v2)",
                _caps("tools"),
            ),
            ("ernie-3.5-8k", "ernie-3.5-8k", ("ernie-bot",), "Baidu ERNIE 3.5 (Qianfan v2)", _caps("tools")),
            (
                "ernie-speed-128k",
                "ernie-speed-128k",
                (),
                "Baidu ERNIE Speed, 128K context (Qianfan v2)",
                _caps(),
            ),
            (
                "embedding-v1",
                "embedding-v1",
                (),
                "Baidu Embedding-V1, 384 dimensions (Qianfan v2)",
                _EMBEDDINGS,
            ),
            (
                "bge-large-zh",
                "bge-large-zh",
                (),
                "BAAI bge-large-zh, 1024 dimensions (Qianfan v2)",
                _EMBEDDINGS,
            ),
        ),
        # Qianfan's embedding models take at most 16 texts per call.
        embedding_batch_size=16,
    ),
    Preset(
        "zhipu",
        "openai",
        "https://open.bigmodel.cn/api/paas/v4",
        "ZHIPUAI_API_KEY",
        True,
        (
            ("glm-4-flash", "glm-4-flash", (), "Zhipu GLM-4 Flash", _TOOLS_JSON),
            ("glm-4-plus", "glm-4-plus", (), "Zhipu GLM-4 Plus", _TOOLS_JSON),
            (
                "embedding-3",
                "embedding-3",
                (),
                "Zhipu Embedding-3, 2048 dimensions (shortenable)",
                _EMBEDDINGS,
            ),
        ),
        # Zhipu's embedding-3 takes at most 64 texts per call.
        embedding_batch_size=64,
    ),
    Preset(
        "moonshot",
        "openai",
        "https://api.moonshot.cn/v1",
        "MOONSHOT_API_KEY",
        True,
        (
            ("moonshot-v1-8k", "moonshot-v1-8k", ("kimi",), "Moonshot Kimi, 8K context", _TOOLS_JSON),
            ("moonshot-v1-32k", "moonshot-v1-32k", (), "Moonshot Kimi, 32K context", _TOOLS_JSON),
            ("moonshot-v1-128k", "moonshot-v1-128k", (), "Moonshot Kimi, 128K context", _TOOLS_JSON),
        ),
    ),
    Preset(
        "gemini",
        "gemini",
        "https://generativelanguage.googleapis.com",
        "GEMINI_API_KEY",
        True,
        (
            ("gemini-2.0-flash", "gemini-2.0-flash", (), "Google Gemini 2.0 Flash", _CHAT_VISION_JSON),
            (
                "gemini-2.5-flash",
                "gemini-2.5-flash",
                (),
                "Google Gemini 2.5 Flash (thinking)",
                _CHAT_VISION_JSON | {"reasoning"},
            ),
            (
                "gemini-2.5-pro",
                "gemini-2.5-pro",
                (),
                "Google Gemini 2.5 Pro (thinking)",
                _CHAT_VISION_JSON | {"reasoning"},
            ),
            (
                "gemini-embedding-001",
                "gemini-embedding-001",
                (),
                "Google Gemini embeddings, 3072 dimensions (shortenable; task types)",
                _EMBEDDINGS,
            ),
        ),
    ),
    Preset(
        "anthropic",
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
        True,
        (
            (
                "claude-sonnet-4-5",
                "claude-sonnet-4-5",
                ("claude",),
                "Anthropic Claude Sonnet 4.5 (extended thinking)",
                _CHAT_VISION_JSON | {"reasoning"},
            ),
            (
                "claude-haiku-4-5",
                "claude-haiku-4-5",
                (),
                "Anthropic Claude Haiku 4.5 (extended thinking)",
                _CHAT_VISION_JSON | {"reasoning"},
            ),
        ),
    ),
    # Self-hosted servers: which models they serve is up to you, so they list
    # none; call them as `ollama/<model>` or add [[models]] entries. Their
    # passthrough models may use everything the openai kind translates: the
    # server itself refuses what its model cannot do.
    Preset("ollama", "openai", "http://localhost:11434/v1", "", False),
    Preset("vllm", "openai", "http://localhost:8000/v1", "VLLM_API_KEY", False, needs_base_url_env=True),
    Preset(
        "llamacpp", "openai", "http://localhost:8080/v1", "LLAMACPP_API_KEY", False, needs_base_url_env=True
    ),
)
PRESETS_BY_NAME = {p.name: p for p in PRESETS}

# --- the file ---------------------------------------------------------------------------------

# `keys` is read by server/access/keys.py, `prices` by server/pricing/book.py.
_TOP_KEYS = {"default_model", "presets", "allow_passthrough", "upstreams", "models", "keys", "prices"}
_UPSTREAM_KEYS = {
    "kind",
    "base_url",
    "api_key_env",
    "requires_key",
    "timeout_seconds",
    "max_retries",
    "headers",
    "header_envs",
    "capabilities",
    "max_tokens_param",
    "reasoning_in_history",
    "connect_timeout_seconds",
    "first_token_timeout_seconds",
    "idle_timeout_seconds",
    "base_urls",
    "api_key_envs",
    "embedding_batch_size",
}
_MODEL_KEYS = {
    "id",
    "upstream",
    "upstream_model",
    "aliases",
    "description",
    "capabilities",
    "max_output_tokens",
    "fallbacks",
}


def load_catalog(env: Mapping[str, str], *, reserved_models: Mapping[str, str] | None = None) -> Catalog:
    """Presets + the AIGC_CONFIG file + environment, validated.

    `reserved_models` maps names already taken (the built-in local model) to
    the setting that took them, so the file cannot reuse them.
    """
    reserved = dict(reserved_models or {})
    path = _env(env, "AIGC_CONFIG")
    data: dict[str, Any] = _read_toml(path) if path else {}
    where = _Where(path)

    _no_unknown_keys(data, _TOP_KEYS, where, "")
    preset_names = _preset_names(env, data, where)
    allow_passthrough = setting(env, "AIGC_ALLOW_PASSTHROUGH", None, parse_bool)
    if allow_passthrough is None:
        allow_passthrough = _typed(data, "allow_passthrough", bool, where, "", default=True)

    file_upstreams = _typed(data, "upstreams", dict, where, "", default={})
    upstreams: dict[str, Upstream] = {}
    for preset in PRESETS:
        override = file_upstreams.get(preset.name)
        if preset.name not in preset_names and override is None:
            continue
        if preset.needs_base_url_env and not _env(env, preset.base_url_env) and override is None:
            continue
        upstreams[preset.name] = _upstream(preset.name, override, preset, env, where)
    for name, table in file_upstreams.items():
        if name in PRESETS_BY_NAME:
            continue
        upstreams[name] = _upstream(name, table, None, env, where)

    file_models = _file_models(data, upstreams, where)
    taken: dict[str, str] = dict(reserved)
    models: list[Model] = []
    for model in file_models:
        for name in (model.id, *model.aliases):
            if name in taken:
                raise ConfigError(
                    f"{where.models(model.id)}: model name {name!r} is already used by {taken[name]}"
                )
            taken[name] = where.models(model.id)
        models.append(model)
    # Preset models: a name the file (or the local model) already uses yields
    # to it - the file is the operator's explicit choice.
    for preset in PRESETS:
        if preset.name not in upstreams or preset.name not in preset_names:
            continue
        for model_id, upstream_model, aliases, description, capabilities in preset.models:
            if model_id in taken:
                continue
            free_aliases = tuple(a for a in aliases if a not in taken)
            model = Model(model_id, preset.name, upstream_model, free_aliases, description, capabilities)
            for name in (model_id, *free_aliases):
                taken[name] = f"preset {preset.name}"
            models.append(model)

    for model in models:
        for name in model.fallbacks:
            upstream_name, sep, rest = name.partition("/")
            passthrough = allow_passthrough and sep and rest and upstream_name in upstreams
            if name not in taken and not passthrough:
                raise ConfigError(f"{where.models(model.id)}: fallbacks: no model {name!r}")

    default_model = _env(env, "AIGC_DEFAULT_MODEL")
    default_source = "AIGC_DEFAULT_MODEL"
    if not default_model:
        default_model = _typed(data, "default_model", str, where, "", default="")
        default_source = where.key("default_model")
    if default_model and default_model not in taken:
        upstream, sep, rest = default_model.partition("/")
        if not (allow_passthrough and sep and rest and upstream in upstreams):
            known = ", ".join(sorted(taken)) or "none"
            raise ConfigError(
                f"{default_source} = {default_model!r}: no such model (configured: {known}; "
                "or use upstream/model with allow_passthrough)"
            )

    # Upstreams nothing can reach are dropped (a file-only preset override
    # with no models and no passthrough, say).
    used = {m.upstream for m in models}
    if allow_passthrough:
        used |= set(upstreams)
    return Catalog(
        upstreams={n: u for n, u in upstreams.items() if n in used},
        models=tuple(models),
        default_model=default_model,
        allow_passthrough=allow_passthrough,
        path=path,
    )


class _Where:
    """Names places in the file for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path or "(no config file)"

    def key(self, key: str, table: str = "") -> str:
        return f"{self.path}: {table + ' ' if table else ''}{key}".rstrip()

    def upstream(self, name: str) -> str:
        return f"{self.path} [upstreams.{name}]"

    def models(self, model_id: str) -> str:
        return f"{self.path} [[models]] id={model_id!r}"


def read_config_file(path: str) -> dict[str, Any]:
    """The AIGC_CONFIG file's TOML, or ConfigError."""
    return _read_toml(path)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"AIGC_CONFIG={path!r}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"AIGC_CONFIG={path!r}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        # Its message has the line and column; it never quotes values.
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _preset_names(env: Mapping[str, str], data: Mapping[str, Any], where: _Where) -> set[str]:
    raw = _env(env, "AIGC_PRESETS")
    if raw:
        names = [n.strip() for n in raw.split(",") if n.strip()]
        source = "AIGC_PRESETS"
    else:
        names = _typed(data, "presets", list, where, "", default=[p.name for p in PRESETS])
        source = where.key("presets")
        if not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{source}: expected a list of preset names")
    if names in (["none"], ["off"]):
        return set()
    unknown = [n for n in names if n not in PRESETS_BY_NAME]
    if unknown:
        raise ConfigError(
            f"{source}: unknown preset {unknown[0]!r}; presets are {', '.join(PRESETS_BY_NAME)}"
        )
    return set(names)


def _upstream(
    name: str, table: Any, preset: Preset | None, env: Mapping[str, str], where: _Where
) -> Upstream:
    if table is None:
        table = {}
        source = "preset"
    else:
        source = where.upstream(name)
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: expected a table of upstream settings")
    if not _UPSTREAM_NAME.match(name):
        raise ConfigError(f"{source}: upstream name must be lower-case letters, digits, '-', '_' or '.'")
    if name == "local":
        raise ConfigError(f"{source}: 'local' is the built-in model's provider; pick another name")
    if "api_key" in table or "key" in table:
        raise ConfigError(
            f"{source}: api_key must not be written in the file; put the key in an environment "
            "variable and name that variable with api_key_env"
        )
    _no_unknown_keys(table, _UPSTREAM_KEYS, where, source)

    def get(key: str, kind: type, default: Any) -> Any:
        return _typed(table, key, kind, where, source, default=default)

    kind = get("kind", str, preset.kind if preset else None)
    if kind is None:
        raise ConfigError(f"{source}: missing required key 'kind' ({' | '.join(KINDS)})")
    if kind not in KINDS:
        raise ConfigError(f"{source}: kind = {kind!r}: unknown kind; expected one of {', '.join(KINDS)}")
    if preset is not None and kind != preset.kind:
        raise ConfigError(f"{source}: kind = {kind!r}: preset {name!r} is {preset.kind!r}")

    base_url = get("base_url", str, preset.base_url if preset else None)
    base_url_source = f"{source} base_url"
    if preset is not None and _env(env, preset.base_url_env):
        base_url, base_url_source = _env(env, preset.base_url_env), preset.base_url_env
    if not base_url:
        raise ConfigError(f"{source}: missing required key 'base_url'")
    if not re.match(r"^https?://[^/\s]+", base_url):
        # The URL may carry credentials: do not echo it.
        raise ConfigError(f"{base_url_source}: expected an http:// or https:// URL")

    requires_key = get("requires_key", bool, preset.requires_key if preset else True)
    api_key_env = get("api_key_env", str, preset.api_key_env if preset else "")
    if api_key_env and not _ENV_NAME.match(api_key_env):
        raise ConfigError(
            f"{source}: api_key_env must be the NAME of an environment variable in upper case "
            "(like OPENAI_API_KEY), not the key itself; the value was not shown"
        )
    if requires_key and not api_key_env:
        raise ConfigError(
            f"{source}: missing required key 'api_key_env' (or set requires_key = false for a "
            "server without authentication)"
        )

    timeout = get("timeout_seconds", (int, float), preset.timeout_seconds if preset else 600.0)
    if isinstance(timeout, bool) or not timeout > 0:
        raise ConfigError(f"{source}: timeout_seconds must be a number above 0")
    max_retries = get("max_retries", int, preset.max_retries if preset else 2)
    if isinstance(max_retries, bool) or max_retries < 0:
        raise ConfigError(f"{source}: max_retries must be 0 or more")

    headers: dict[str, str] = {}
    for header, value in get("headers", dict, {}).items():
        if not isinstance(value, str):
            raise ConfigError(f"{source}: headers.{header} must be a string")
        if _SECRET_HEADER.search(header):
            raise ConfigError(
                f"{source}: headers.{header} looks like a credential, which must not be written in "
                f'the file; use header_envs = {{ "{header}" = "ENV_VAR_NAME" }}'
            )
        headers[header] = value
    secret_headers: list[str] = []
    missing: list[str] = []
    for header, var in get("header_envs", dict, {}).items():
        if not isinstance(var, str) or not _ENV_NAME.match(var):
            raise ConfigError(
                f"{source}: header_envs.{header} must be the NAME of an environment variable in "
                "upper case; the value was not shown"
            )
        value = _env(env, var)
        if value:
            headers[header] = value
            secret_headers.append(header)
        else:
            missing.append(var)

    api_key = _env(env, api_key_env) if api_key_env else ""
    if requires_key and not api_key:
        missing.insert(0, api_key_env)
    timeouts = {}
    for key, default in (
        ("connect_timeout_seconds", 10.0),
        ("first_token_timeout_seconds", 120.0),
        ("idle_timeout_seconds", 60.0),
    ):
        value = get(key, (int, float), default)
        if isinstance(value, bool) or not value > 0:
            raise ConfigError(f"{source}: {key} must be a number above 0")
        timeouts[key] = float(value)
    base_urls = get("base_urls", list, [])
    if not all(isinstance(u, str) and re.match(r"^https?://[^/\s]+", u) for u in base_urls):
        raise ConfigError(f"{source}: base_urls must be a list of http:// or https:// URLs")
    key_envs = get("api_key_envs", list, [])
    if not all(isinstance(v, str) and _ENV_NAME.match(v) for v in key_envs):
        raise ConfigError(
            f"{source}: api_key_envs must be a list of environment variable NAMES in upper case; "
            "the values were not shown"
        )
    more_keys = []
    for var in key_envs:
        value = _env(env, var)
        if value:
            more_keys.append(value)
        else:
            missing.append(var)
    capabilities = _capabilities(table, where, source, KIND_CAPABILITIES[kind], KIND_CAPABILITIES[kind])
    max_tokens_param = get("max_tokens_param", str, preset.max_tokens_param if preset else "max_tokens")
    batch_default = preset.embedding_batch_size if preset and preset.embedding_batch_size else None
    embedding_batch_size = get("embedding_batch_size", int, batch_default or EMBEDDING_BATCH_SIZES[kind])
    if isinstance(embedding_batch_size, bool) or embedding_batch_size < 1:
        raise ConfigError(f"{source}: embedding_batch_size must be 1 or more")
    if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
        raise ConfigError(f"{source}: max_tokens_param must be max_tokens or max_completion_tokens")
    if max_tokens_param != "max_tokens" and kind != "openai":
        raise ConfigError(f'{source}: max_tokens_param applies to kind = "openai" only')
    reasoning_in_history = get("reasoning_in_history", bool, preset.reasoning_in_history if preset else False)
    if reasoning_in_history and kind != "openai":
        raise ConfigError(f'{source}: reasoning_in_history applies to kind = "openai" only')
    return Upstream(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key_env=api_key_env,
        requires_key=requires_key,
        timeout_seconds=float(timeout),
        max_retries=max_retries,
        headers=headers,
        secret_headers=tuple(secret_headers),
        api_key=api_key,
        missing_env=tuple(missing),
        source=source,
        capabilities=capabilities,
        max_tokens_param=max_tokens_param,
        reasoning_in_history=reasoning_in_history,
        base_urls=tuple(u.rstrip("/") for u in base_urls),
        api_keys=tuple(more_keys),
        embedding_batch_size=embedding_batch_size,
        **timeouts,
    )


def _file_models(data: Mapping[str, Any], upstreams: Mapping[str, Upstream], where: _Where) -> list[Model]:
    entries = _typed(data, "models", list, where, "", default=[])
    models = []
    for index, entry in enumerate(entries):
        label = f"{where.path} [[models]] #{index + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label}: expected a table ([[models]])")
        model_id = entry.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise ConfigError(f"{label}: missing required key 'id'")
        label = where.models(model_id)
        if any(ch.isspace() for ch in model_id):
            raise ConfigError(f"{label}: id must not contain spaces")
        _no_unknown_keys(entry, _MODEL_KEYS, where, label)
        upstream = entry.get("upstream")
        if not isinstance(upstream, str) or not upstream:
            raise ConfigError(f"{label}: missing required key 'upstream'")
        if upstream not in upstreams:
            hint = (
                f"preset {upstream!r} is not enabled (see presets / AIGC_PRESETS, and "
                f"{PRESETS_BY_NAME[upstream].base_url_env})"
                if upstream in PRESETS_BY_NAME
                else f"no [upstreams.{upstream}] table"
            )
            raise ConfigError(f"{label}: upstream = {upstream!r}: {hint}")
        upstream_model = _typed(entry, "upstream_model", str, where, label, default=model_id)
        aliases = _typed(entry, "aliases", list, where, label, default=[])
        if not all(isinstance(a, str) and a and not any(c.isspace() for c in a) for a in aliases):
            raise ConfigError(f"{label}: aliases must be a list of names without spaces")
        description = _typed(entry, "description", str, where, label, default="")
        kind_caps = KIND_CAPABILITIES[upstreams[upstream].kind]
        capabilities = _capabilities(entry, where, label, upstreams[upstream].capabilities, kind_caps)
        max_tokens = _typed(entry, "max_output_tokens", int, where, label, default=None)
        if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens <= 0):
            raise ConfigError(f"{label}: max_output_tokens must be a whole number above 0")
        fallbacks = _typed(entry, "fallbacks", list, where, label, default=[])
        if not all(isinstance(f, str) and f and f != model_id for f in fallbacks):
            raise ConfigError(f"{label}: fallbacks must be a list of other model ids")
        models.append(
            Model(
                model_id,
                upstream,
                upstream_model,
                tuple(aliases),
                description,
                capabilities,
                max_output_tokens=max_tokens,
                fallbacks=tuple(fallbacks),
            )
        )
    return models


def _capabilities(
    table: Mapping[str, Any], where: _Where, label: str, default: frozenset[str], possible: frozenset[str]
) -> frozenset[str]:
    """The `capabilities` list of a table, checked; `default` when absent."""
    names = _typed(table, "capabilities", list, where, label, default=None)
    if names is None:
        return default
    unknown = [n for n in names if n not in CAPABILITIES]
    if unknown or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"{label}: capabilities: unknown capability {unknown[0] if unknown else names!r}; "
            f"expected some of {', '.join(CAPABILITIES)}"
        )
    impossible = sorted(set(names) - possible)
    if impossible:
        raise ConfigError(
            f"{label}: capabilities: this upstream's kind cannot translate {', '.join(impossible)}"
        )
    return frozenset(names)


def _no_unknown_keys(table: Mapping[str, Any], allowed: Iterable[str], where: _Where, label: str) -> None:
    allowed = set(allowed)
    for key in table:
        if key not in allowed:
            place = label or where.path
            raise ConfigError(f"{place}: unknown key {key!r}; expected one of {', '.join(sorted(allowed))}")


def _typed(
    table: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: _Where,
    label: str,
    *,
    default: Any,
) -> Any:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        type_names = {"str": "a string", "bool": "true or false", "list": "a list", "dict": "a table"}
        expected = type_names.get(names, f"a number ({names})")
        raise ConfigError(f"{label or where.path}: {key} must be {expected}")
    return value


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


__all__ = [
    "CAPABILITIES",
    "KINDS",
    "KIND_CAPABILITIES",
    "PRESETS",
    "Catalog",
    "ConfigError",
    "Kind",
    "Model",
    "Preset",
    "Upstream",
    "load_catalog",
]
