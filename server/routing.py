"""Which provider serves which model: model names, aliases and `upstream/model`.

`build_router(settings)` turns the catalog (server/catalog.py) into one
provider per upstream and one route per model name. A request's `model` is
looked up as a model id or alias first; failing that, `upstream/model` (when
passthrough is allowed) sends `model` as is to that upstream, e.g.
`openai/gpt-4.1-nano` or `ollama/qwen2.5:7b`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager

from aigc.v1 import model_pb2
from server.catalog import Upstream
from server.config import Settings, redact_url
from server.errors import InvalidRequest, ModelNotFound
from server.providers.base import Capability, Chunk, Provider, ProviderRequest
from server.providers.embeddings import EmbeddingRequest, Embeddings
from server.providers.local_embedding import DESCRIPTION as EMBEDDING_DESCRIPTION
from server.providers.local_embedding import LOCAL_EMBEDDING_CAPABILITIES, LocalEmbeddingProvider

log = logging.getLogger(__name__)

# kind -> (module, class). Imported when an upstream of that kind is configured.
_PROVIDER_CLASSES = {
    "openai": ("server.providers.openai", "OpenAICompatProvider"),
    "gemini": ("server.providers.gemini", "GeminiProvider"),
    "anthropic": ("server.providers.anthropic", "AnthropicProvider"),
}


_PASSTHROUGH_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,255}$")


def capability_values(names: Iterable[str]) -> frozenset[Capability]:
    """Catalog capability names ("tools") as aigc.v1.Capability values."""
    return frozenset(model_pb2.Capability.Value(f"CAPABILITY_{name.upper()}") for name in names)


@dataclasses.dataclass(frozen=True)
class ModelRoute:
    # The name callers use.
    id: str
    provider: Provider
    # The model's name at the provider.
    upstream_model: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    # aigc.v1.Capability values: what requests to this model may use.
    capabilities: frozenset[Capability] = frozenset()
    # The most tokens one answer may ask for (and the default); None: the vendor's.
    max_output_tokens: int | None = None
    # Model names to try, in order, when this one fails before answering.
    fallbacks: tuple[str, ...] = ()
    # An `upstream/model` name not in the configuration: its metric label is
    # `upstream/*`, so random names cannot grow the metrics without bound.
    passthrough: bool = False

    @property
    def label(self) -> str:
        return f"{self.provider.name}/*" if self.passthrough else self.id


class Router:
    def __init__(
        self,
        routes: Iterable[ModelRoute],
        default_model: str,
        *,
        passthrough: Mapping[str, Provider] | None = None,
        default_embedding_model: str = "",
    ) -> None:
        self._routes = sorted(routes, key=lambda r: r.id)
        self._passthrough = dict(passthrough or {})
        self._by_name: dict[str, ModelRoute] = {}
        for route in self._routes:
            for name in (route.id, *route.aliases):
                if name in self._by_name:
                    raise ValueError(f"model name {name!r} is used twice")
                self._by_name[name] = route
        default = self._lookup(default_model)
        if default is None:
            raise ValueError(f"default model {default_model!r} is not configured")
        self.default = default
        # Embed with no `model`: the named one (the built-in embedding model),
        # else the first embedding model in ListModels order; None if none.
        self.default_embedding = self._lookup(default_embedding_model) if default_embedding_model else None
        if self.default_embedding is None:
            self.default_embedding = next(
                (r for r in self.models() if model_pb2.CAPABILITY_EMBEDDINGS in r.capabilities), None
            )

    def resolve(self, name: str) -> ModelRoute:
        """The route for a request's `model`; empty means the default."""
        if not name:
            return self.default
        route = self._lookup(name)
        if route is None:
            raise ModelNotFound(name)
        return route

    def models(self) -> list[ModelRoute]:
        """Default model first, then by id. Passthrough names are not listed."""
        return [self.default, *(r for r in self._routes if r is not self.default)]

    def providers(self) -> list[Provider]:
        unique: dict[int, Provider] = {}
        for provider in (*(r.provider for r in self._routes), *self._passthrough.values()):
            unique.setdefault(id(provider), provider)
        return list(unique.values())

    def _lookup(self, name: str) -> ModelRoute | None:
        route = self._by_name.get(name)
        if route is not None:
            return route
        upstream, sep, upstream_model = name.partition("/")
        provider = self._passthrough.get(upstream) if sep else None
        if provider is None or not upstream_model:
            return None
        segments = upstream_model.split("/")
        if not _PASSTHROUGH_MODEL.match(upstream_model) or any(s in ("", ".", "..") for s in segments):
            # It becomes part of a URL at some vendors (Gemini): no path tricks.
            raise InvalidRequest(
                {
                    "model": "a passthrough model name is letters, digits and . _ - : @ + / "
                    "(no '.', '..' or empty path segments)"
                }
            )
        return ModelRoute(
            id=name,
            provider=provider,
            upstream_model=upstream_model,
            capabilities=provider.capabilities,
            passthrough=True,
        )


class UpstreamProvider(Provider):
    """A configured upstream: its vendor provider plus what the catalog knows.

    Readiness and the hint come from the catalog, which knows the name of the
    variable that holds the key ("set DEEPSEEK_API_KEY"), not just that a key
    is missing. Everything else is the vendor provider's.
    """

    def __init__(self, upstream: Upstream, inner: Provider | None, unavailable: str = "") -> None:
        self.name = upstream.name
        self.upstream = upstream
        self.inner = inner
        self._unavailable = unavailable
        if inner is not None:
            self.reserved_vendor_keys = inner.reserved_vendor_keys
            self.reserved_embedding_keys = inner.reserved_embedding_keys
            self.max_embedding_inputs = inner.max_embedding_inputs
            self.supported_capabilities = inner.supported_capabilities
            self.max_retries = inner.max_retries
        self._capabilities = capability_values(upstream.capabilities) & self.supported_capabilities

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The upstream's configured `capabilities`: those of its passthrough models."""
        return self._capabilities

    def __repr__(self) -> str:
        return f"UpstreamProvider({self.upstream!r})"

    async def start(self) -> None:
        if self.inner is not None:
            await self.inner.start()

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()

    def ready(self) -> bool:
        return self.inner is not None and self.upstream.ready and self.inner.ready()

    def not_ready_hint(self) -> str:
        if self.inner is None:
            return self._unavailable
        if not self.upstream.ready:
            return f"set {' and '.join(self.upstream.missing_env)} in the server's environment"
        return self.inner.not_ready_hint()

    def validate(self, request: ProviderRequest) -> Mapping[str, str]:
        return {} if self.inner is None else self.inner.validate(request)

    def stream(self, request: ProviderRequest) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        return self._require_inner().stream(request)

    def validate_embedding(self, request: EmbeddingRequest) -> Mapping[str, str]:
        return {} if self.inner is None else self.inner.validate_embedding(request)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        return await self._require_inner().embed(request)

    def _require_inner(self) -> Provider:
        if self.inner is None:
            raise RuntimeError(f"upstream {self.name} is not available: {self._unavailable}")
        return self.inner


def build_provider(upstream: Upstream) -> UpstreamProvider:
    module_name, class_name = _PROVIDER_CLASSES[upstream.kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the module is there but broken: a bad install, fail loudly
        return UpstreamProvider(upstream, None, f"this build has no {upstream.kind!r} provider")
    cls = getattr(module, class_name)
    options: dict[str, object] = {}
    if upstream.kind == "openai":
        options = {
            "max_tokens_param": upstream.max_tokens_param,
            "reasoning_in_history": upstream.reasoning_in_history,
        }
    inner = cls(
        upstream.name,
        base_url=upstream.base_url,
        api_key=upstream.api_key,
        requires_key=upstream.requires_key,
        max_retries=upstream.max_retries,
        timeout_seconds=upstream.timeout_seconds,
        connect_timeout_seconds=upstream.connect_timeout_seconds,
        first_token_timeout_seconds=upstream.first_token_timeout_seconds,
        idle_timeout_seconds=upstream.idle_timeout_seconds,
        default_headers=dict(upstream.headers),
        base_urls=upstream.base_urls,
        api_keys=upstream.api_keys,
        max_embedding_inputs=upstream.embedding_batch_size,
        **options,
    )
    return UpstreamProvider(upstream, inner)


def build_router(settings: Settings, *, environ: MutableMapping[str, str] | None = None) -> Router:
    """Providers and routes for `settings`. Call once, before providers start.

    Also pins the loopback proxy bypass into `environ` (os.environ by
    default), where httpx and urllib read NO_PROXY when clients are created.
    """
    _bypass_proxy_for_loopback(settings, os.environ if environ is None else environ)
    routes: list[ModelRoute] = []
    if settings.local.enabled:
        # Imported only when the model is on: the llama.cpp runtime needs native
        # libraries (libgomp) that a vendors-only deployment may not have.
        from server.providers.local import LOCAL_CAPABILITIES, LocalProvider

        routes.append(
            ModelRoute(
                id=settings.local.model_id,
                provider=LocalProvider(settings.local, verbose=settings.log_level == "DEBUG"),
                upstream_model=settings.local.model_id,
                description="SmolLM2-135M-Instruct (Q4_1 GGUF) run by llama.cpp; "
                "no API key or network needed.",
                capabilities=LOCAL_CAPABILITIES,
                max_output_tokens=settings.local.max_output_tokens,
            )
        )
    embedding = settings.local_embedding
    if embedding.enabled:
        routes.append(
            ModelRoute(
                id=embedding.model_id,
                provider=LocalEmbeddingProvider(embedding, verbose=settings.log_level == "DEBUG"),
                upstream_model=embedding.model_id,
                description=EMBEDDING_DESCRIPTION,
                capabilities=LOCAL_EMBEDDING_CAPABILITIES,
            )
        )
    catalog = settings.catalog
    providers = {name: build_provider(upstream) for name, upstream in catalog.upstreams.items()}
    for model in catalog.models:
        routes.append(
            ModelRoute(
                id=model.id,
                provider=providers[model.upstream],
                upstream_model=model.upstream_model,
                aliases=model.aliases,
                description=model.description,
                capabilities=capability_values(model.capabilities)
                & providers[model.upstream].supported_capabilities,
                max_output_tokens=model.max_output_tokens,
                fallbacks=model.fallbacks,
            )
        )
    for provider in providers.values():
        upstream = provider.upstream
        log.info(
            "upstream %s (%s) at %s: %s",
            upstream.name,
            upstream.kind,
            redact_url(upstream.base_url),
            "ready" if provider.ready() else f"not ready: {provider.not_ready_hint()}",
            extra={"upstream": upstream.name, "source": upstream.source},
        )
    passthrough = providers if catalog.allow_passthrough else None
    return Router(
        routes,
        settings.default_model,
        passthrough=passthrough,
        default_embedding_model=embedding.model_id if embedding.enabled else "",
    )


def _bypass_proxy_for_loopback(settings: Settings, environ: MutableMapping[str, str]) -> None:
    proxies = settings.proxy.describe()
    if not proxies:
        return
    value = settings.proxy.no_proxy_with_loopback()
    # Both spellings: urllib lets the lower-case one win when both are set.
    environ["NO_PROXY"] = environ["no_proxy"] = value
    proxies["no_proxy"] = value
    log.info("upstream calls use proxies %s", proxies, extra={"proxies": proxies})
