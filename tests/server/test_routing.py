"""Routing: model ids, aliases, the default model and `upstream/model` passthrough -
the Router on its own, then the real server calling a fake OpenAI-protocol upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2, model_pb2
from server import routing
from server.catalog import Upstream
from server.config import Settings
from server.errors import InvalidRequest, ModelNotFound
from server.providers.base import Chunk, Provider, ProviderRequest
from server.routing import ModelRoute, Router, UpstreamProvider, build_provider, build_router
from tests.fakes import openai_fake
from tests.proxies.env import fake_upstream_config, isolated_env, write_config
from tests.proxies.relays import FakeUpstream, LoopThread
from tests.support.processes import ROOT, running_server
from tests.support.status import error_info

KEY = "sk-routetest-SECRET-9b8c7d6e"


class Dummy(Provider):
    def __init__(self, name: str) -> None:
        self.name = name

    @contextlib.asynccontextmanager
    async def stream(self, request: ProviderRequest) -> AsyncIterator[AsyncIterator[Chunk]]:
        yield aiter(())  # never called: these tests only route


# --- the Router ------------------------------------------------------------------------------


def router(passthrough: bool = True, default: str = "b") -> Router:
    one, two = Dummy("one"), Dummy("two")
    routes = [
        ModelRoute("b", one, "b-upstream", aliases=("bee",)),
        ModelRoute("a", two, "a-upstream"),
    ]
    return Router(routes, default, passthrough={"one": one, "two": two} if passthrough else None)


def test_resolve_by_id_alias_and_default():
    r = router()
    assert r.resolve("a").upstream_model == "a-upstream"
    assert r.resolve("bee") is r.resolve("b")
    assert r.resolve("") is r.default and r.default.id == "b"


def test_models_lists_the_default_first_then_by_id_and_no_passthrough_names():
    r = router(default="bee")
    assert [m.id for m in r.models()] == ["b", "a"]


def test_passthrough_sends_the_rest_of_the_name_to_that_upstream():
    r = router()
    route = r.resolve("two/org/model:7b")
    assert (route.id, route.provider.name, route.upstream_model) == (
        "two/org/model:7b",
        "two",
        "org/model:7b",
    )


@pytest.mark.parametrize("name", ["nope", "three/x", "one/", "/x"])
def test_unknown_names_are_model_not_found(name):
    with pytest.raises(ModelNotFound):
        router().resolve(name)


@pytest.mark.parametrize(
    "name",
    [
        "one/../v1beta/models/x",
        "one/a/../../b",
        "one/./x",
        "one/a//b",
        "one/x?key=1",
        "one/%2e%2e/x",
        "one/a b",
    ],
)
def test_passthrough_names_that_could_change_a_vendor_url_are_refused(name):
    with pytest.raises(InvalidRequest) as caught:
        router().resolve(name)
    assert set(caught.value.violations) == {"model"}


def test_passthrough_routes_share_one_bounded_metric_label():
    r = router()
    labels = {r.resolve(f"one/random-{i}").label for i in range(50)}
    assert labels == {"one/*"}
    assert r.resolve("b").label == "b"


def test_passthrough_off():
    with pytest.raises(ModelNotFound):
        router(passthrough=False).resolve("one/x")


def test_a_configured_id_with_a_slash_wins_over_passthrough():
    one = Dummy("one")
    r = Router([ModelRoute("one/special", one, "special-v2")], "one/special", passthrough={"one": one})
    assert r.resolve("one/special").upstream_model == "special-v2"
    assert r.resolve("one/other").upstream_model == "other"


def test_default_may_be_a_passthrough_name():
    r = router(default="one/any")
    assert r.default.upstream_model == "any"
    assert r.models()[0].id == "one/any"


def test_router_rejects_duplicates_and_an_unknown_default():
    p = Dummy("p")
    with pytest.raises(ValueError, match="used twice"):
        Router([ModelRoute("a", p, "a"), ModelRoute("b", p, "b", aliases=("a",))], "a")
    with pytest.raises(ValueError, match="default model 'z' is not configured"):
        Router([ModelRoute("a", p, "a")], "z")


def test_providers_are_unique_and_include_passthrough_only_upstreams():
    r = router()
    assert sorted(p.name for p in r.providers()) == ["one", "two"]


# --- build_router ----------------------------------------------------------------------------


def test_build_router_makes_one_provider_per_upstream_with_catalog_hints():
    environ: dict[str, str] = {}
    settings = Settings.from_env(isolated_env(OPENAI_API_KEY=KEY))
    r = build_router(settings, environ=environ)
    gpt, deepseek = r.resolve("gpt-4o"), r.resolve("deepseek-chat")
    assert gpt.provider is r.resolve("gpt-4o-mini").provider
    assert gpt.provider.ready() and not deepseek.provider.ready()
    assert deepseek.provider.not_ready_hint() == "set DEEPSEEK_API_KEY in the server's environment"
    assert r.default.id == "gpt-4o-mini"
    assert KEY not in repr(gpt.provider)
    assert environ == {}, "no proxy configured: the environment is left alone"


def test_every_kind_builds_its_vendor_provider():
    settings = Settings.from_env(isolated_env(OPENAI_API_KEY=KEY, GEMINI_API_KEY=KEY, ANTHROPIC_API_KEY=KEY))
    r = build_router(settings, environ={})
    for model, cls in [
        ("gpt-4o", "OpenAICompatProvider"),
        ("gemini-2.0-flash", "GeminiProvider"),
        ("claude-sonnet-4-5", "AnthropicProvider"),
    ]:
        provider = r.resolve(model).provider
        assert isinstance(provider, UpstreamProvider)
        assert type(provider.inner).__name__ == cls, model
        assert provider.ready()


def test_a_kind_missing_from_the_build_is_listed_not_ready(monkeypatch):
    monkeypatch.setitem(routing._PROVIDER_CLASSES, "gemini", ("server.providers.no_such_module", "X"))
    upstream = Upstream("g", "gemini", "https://g.example", "G_KEY", True, 10.0, 0, api_key=KEY)
    provider = build_provider(upstream)
    assert not provider.ready()
    assert provider.not_ready_hint() == "this build has no 'gemini' provider"


def test_routes_carry_capabilities_from_presets_and_passthrough_from_the_upstream():
    settings = Settings.from_env(
        isolated_env(OPENAI_API_KEY=KEY, ANTHROPIC_API_KEY=KEY, AIGC_LOCAL_ENABLED="true")
    )
    r = build_router(settings, environ={})
    c = model_pb2
    assert r.resolve("gpt-4o").capabilities == {
        c.CAPABILITY_TOOLS,
        c.CAPABILITY_VISION,
        c.CAPABILITY_JSON_OUTPUT,
        c.CAPABILITY_JSON_SCHEMA,
    }
    assert c.CAPABILITY_REASONING in r.resolve("o4-mini").capabilities
    assert c.CAPABILITY_RAW_COMPLETION not in r.resolve("claude").capabilities
    assert c.CAPABILITY_VISION not in r.resolve("smollm2").capabilities
    # Passthrough: whatever the kind translates (the vendor refuses what its model cannot do).
    assert c.CAPABILITY_RAW_COMPLETION in r.resolve("openai/gpt-3.5-turbo-instruct").capabilities
    assert c.CAPABILITY_RAW_COMPLETION not in r.resolve("anthropic/claude-x").capabilities


def test_build_router_pins_the_loopback_proxy_bypass():
    environ = {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "corp.example"}
    settings = Settings.from_env(
        isolated_env(HTTPS_PROXY="http://proxy:3128", NO_PROXY="corp.example", AIGC_LOCAL_ENABLED="true")
    )
    build_router(settings, environ=environ)
    assert environ["no_proxy"] == environ["NO_PROXY"] == "corp.example,127.0.0.1,localhost,::1"


# --- through the real server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    with LoopThread() as thread:
        yield thread


@pytest.fixture(scope="module")
def fake(loop: LoopThread) -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    loop.run(upstream.__aenter__())
    yield upstream
    loop.run(upstream.__aexit__(None, None, None))


@pytest.fixture(scope="module")
def served(fake, tmp_path_factory):
    config = fake_upstream_config(tmp_path_factory.mktemp("routing"), fake.base_url)
    # AIGC_PRESETS beats the file's `presets = []`.
    env = isolated_env(AIGC_CONFIG=config, AIGC_PRESETS="deepseek", FAKE_API_KEY=KEY, AIGC_LOG_LEVEL="DEBUG")
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        yield server, aigc_service_pb2_grpc.AigcServiceStub(channel)


def ask(stub, model: str) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model,
        messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")],
        generation_config=generation_pb2.GenerationConfig(max_output_tokens=8),
    )


@pytest.mark.parametrize(
    ("model", "upstream_model", "answered_as"),
    [
        ("", "gpt-fake", "fake-model"),
        ("fake-model", "gpt-fake", "fake-model"),
        ("fake", "gpt-fake", "fake-model"),
        ("fake/Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "fake/Qwen/Qwen2.5-7B-Instruct"),
    ],
)
def test_chat_is_routed_by_id_alias_default_and_passthrough(served, fake, model, upstream_model, answered_as):
    _, stub = served
    fake.script(openai_fake.chat("routed"))
    before = len(fake.requests)
    reply = stub.Chat(ask(stub, model), timeout=30)
    assert [p.text for p in reply.message.parts] == ["routed"]
    assert (reply.model, reply.provider) == (answered_as, "fake")
    assert fake.requests[before].json()["model"] == upstream_model
    assert fake.requests[before].headers["authorization"] == f"Bearer {KEY}"


def test_streamed_chat_by_alias_ends_with_usage(served, fake):
    _, stub = served
    fake.script(openai_fake.stream(openai_fake.chat_events(["你", "好"])))
    before = len(fake.requests)
    messages = list(stub.StreamChat(ask(stub, "fake"), timeout=30))
    assert "".join(p.text for m in messages for p in m.message.parts) == "你好"
    assert messages[-1].usage.total_tokens == 12 and messages[-1].model == "fake-model"
    assert fake.requests[before].json()["model"] == "gpt-fake"


def error_of(call) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), error_info(caught.value), caught.value.details()


def test_a_preset_without_its_key_is_failed_precondition_naming_the_variable(served):
    _, stub = served
    code, info, message = error_of(lambda: stub.Chat(ask(stub, "deepseek-chat"), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "PROVIDER_NOT_CONFIGURED"
    assert "set DEEPSEEK_API_KEY" in message
    assert info.metadata["provider"] == "deepseek"
    # Passthrough to the same upstream says the same.
    code, info, _ = error_of(lambda: stub.Chat(ask(stub, "deepseek/deepseek-coder"), timeout=10))
    assert info.reason == "PROVIDER_NOT_CONFIGURED"


@pytest.mark.parametrize("model", ["gpt-9", "openai/gpt-4o", "nobody/model"])
def test_unknown_models_and_disabled_presets_are_not_found(served, model):
    _, stub = served
    code, info, _ = error_of(lambda: stub.Chat(ask(stub, model), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and info.reason == "MODEL_NOT_FOUND"


def test_list_models_shows_only_what_is_configured(served):
    _, stub = served
    response = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    listed = {m.id: (m.provider, m.ready, m.is_default) for m in response.models}
    assert listed == {
        "fake-model": ("fake", True, True),
        "deepseek-chat": ("deepseek", False, False),
        "deepseek-reasoner": ("deepseek", False, False),
    }


def test_the_key_never_reaches_the_log_even_at_debug(served):
    server, _ = served
    output = server.output()
    assert "fake" in output  # the log is there
    assert KEY not in output


def test_passthrough_can_be_turned_off(fake, tmp_path):
    config = write_config(
        tmp_path,
        f"""
        presets = []
        allow_passthrough = false
        default_model = "m"
        [upstreams.fake]
        kind = "openai"
        base_url = "{fake.base_url}/v1"
        requires_key = false
        [[models]]
        id = "m"
        upstream = "fake"
        """,
    )
    with running_server(isolated_env(AIGC_CONFIG=config)) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
            code, info, _ = error_of(lambda: stub.Chat(ask(stub, "fake/m"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and info.reason == "MODEL_NOT_FOUND"


# --- the local provider is imported only when the local model is on -------------------------


def test_server_starts_without_the_llama_runtime_when_the_local_model_is_off(tmp_path):
    """An image without the llama.cpp runtime's native libraries (issue 14: no
    libgomp1) must still serve vendor models. A stand-in `xllamacpp` that fails
    to import the way the real one does there proves nothing imports it."""
    (tmp_path / "xllamacpp.py").write_text(
        'raise ImportError("libgomp.so.1: cannot open shared object file: No such file or directory")\n'
    )
    env = isolated_env(AIGC_LOCAL_ENABLED="false", OPENAI_API_KEY=KEY)
    env["PYTHONPATH"] = f"{tmp_path}:{ROOT}:{ROOT / 'gen' / 'python'}"
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        reply = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert "smollm2" not in [m.id for m in reply.models]
