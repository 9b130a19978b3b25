"""Which provider serves which model: model names and aliases to routes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from server.config import Settings
from server.errors import ModelNotFound
from server.providers.base import Provider
from server.providers.local import LocalProvider


@dataclasses.dataclass(frozen=True)
class ModelRoute:
    # The name callers use.
    id: str
    provider: Provider
    # The model's name at the provider.
    upstream_model: str
    aliases: tuple[str, ...] = ()
    description: str = ""


class Router:
    def __init__(self, routes: Iterable[ModelRoute], default_model: str) -> None:
        self._routes = sorted(routes, key=lambda r: r.id)
        self._by_name: dict[str, ModelRoute] = {}
        for route in self._routes:
            for name in (route.id, *route.aliases):
                if name in self._by_name:
                    raise ValueError(f"model name {name!r} is used twice")
                self._by_name[name] = route
        if default_model not in self._by_name:
            raise ValueError(f"default model {default_model!r} is not configured")
        self.default = self._by_name[default_model]

    def resolve(self, name: str) -> ModelRoute:
        """The route for a request's `model`; empty means the default."""
        if not name:
            return self.default
        route = self._by_name.get(name)
        if route is None:
            raise ModelNotFound(name)
        return route

    def models(self) -> list[ModelRoute]:
        """Default model first, then by id."""
        return [self.default, *(r for r in self._routes if r is not self.default)]

    def providers(self) -> list[Provider]:
        unique: dict[int, Provider] = {}
        for route in self._routes:
            unique.setdefault(id(route.provider), route.provider)
        return list(unique.values())


def build_router(settings: Settings) -> Router:
    routes: list[ModelRoute] = []
    if settings.local.enabled:
        routes.append(
            ModelRoute(
                id=settings.local.model_id,
                provider=LocalProvider(settings.local, verbose=settings.log_level == "DEBUG"),
                upstream_model=settings.local.model_id,
                description="SmolLM2-135M-Instruct (Q4_1 GGUF) run in-process by llama.cpp; "
                "no API key or network needed.",
            )
        )
    return Router(routes, settings.default_model)
