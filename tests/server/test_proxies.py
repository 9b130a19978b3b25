"""HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY for upstream calls, proven end to end.

The real server process calls a fake OpenAI-protocol upstream through local
proxies that count what they relay (tests/proxies). The upstream is named
`upstream.test`, a name only the proxies resolve: a call that succeeds went
through a proxy. The built-in local model's loopback traffic never does.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from server.config import ConfigError, ProxySettings, redact_url
from tests.fakes import openai_fake
from tests.fakes.http import closed_port
from tests.proxies.env import fake_upstream_config, isolated_env
from tests.proxies.relays import FakeUpstream, HttpProxy, LoopThread, Socks5Proxy
from tests.support.content import text_of
from tests.support.processes import running_server

UPSTREAM_NAME = "upstream.test"
KEY = "sk-proxytest-0123456789abcdef"


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    with LoopThread() as thread:
        yield thread


@pytest.fixture
def http_proxy(loop: LoopThread) -> Iterator[HttpProxy]:
    proxy = HttpProxy(hosts={UPSTREAM_NAME: "127.0.0.1"})
    loop.run(proxy.start())
    yield proxy
    loop.run(proxy.stop())


@pytest.fixture
def socks_proxy(loop: LoopThread) -> Iterator[Socks5Proxy]:
    proxy = Socks5Proxy(hosts={UPSTREAM_NAME: "127.0.0.1"}, username="sockuser", password="socks-pass-771")
    loop.run(proxy.start())
    yield proxy
    loop.run(proxy.stop())


def fake_upstream(loop: LoopThread, host: str = "127.0.0.1", name: str = UPSTREAM_NAME, **options):
    fake = FakeUpstream(host, name=name, **options)
    loop.run(fake.__aenter__())
    return fake


def chat(address: str, model: str = "fake-model") -> pb.ChatResponse:
    with grpc.insecure_channel(address) as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        request = pb.ChatRequest(
            model=model,
            messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")],
            generation_config=generation_pb2.GenerationConfig(max_output_tokens=8),
        )
        return stub.Chat(request, timeout=60)


def test_https_upstream_is_tunnelled_through_https_proxy_with_connect(loop, http_proxy, tmp_path):
    cert, key = _self_signed(tmp_path, UPSTREAM_NAME)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    fake = fake_upstream(loop, ssl=tls)
    fake.script(openai_fake.chat("through the tunnel"))
    env = isolated_env(
        AIGC_CONFIG=fake_upstream_config(tmp_path, fake.base_url),
        FAKE_API_KEY=KEY,
        HTTPS_PROXY=http_proxy.url,
        SSL_CERT_FILE=str(cert),
    )
    try:
        with running_server(env) as server:
            reply = chat(server.address)
    finally:
        loop.run(fake.__aexit__(None, None, None))
    assert text_of(reply.message) == "through the tunnel"
    assert http_proxy.relayed == [f"{UPSTREAM_NAME}:{fake.port}"]
    assert fake.requests[0].json()["model"] == "gpt-fake"
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_http_upstream_is_forwarded_by_http_proxy(loop, http_proxy, tmp_path):
    fake = fake_upstream(loop)
    fake.script(openai_fake.chat("forwarded"))
    env = isolated_env(
        AIGC_CONFIG=fake_upstream_config(tmp_path, fake.base_url), FAKE_API_KEY=KEY, HTTP_PROXY=http_proxy.url
    )
    try:
        with running_server(env) as server:
            reply = chat(server.address)
    finally:
        loop.run(fake.__aexit__(None, None, None))
    assert text_of(reply.message) == "forwarded"
    assert http_proxy.relayed == [f"{UPSTREAM_NAME}:{fake.port}"]


def socks_call(loop, socks_proxy, tmp_path, log_level: str) -> tuple[pb.ChatResponse, str, int]:
    fake = fake_upstream(loop)
    fake.script(openai_fake.chat("via socks"))
    env = isolated_env(
        AIGC_CONFIG=fake_upstream_config(tmp_path, fake.base_url),
        FAKE_API_KEY=KEY,
        ALL_PROXY=socks_proxy.url,
        AIGC_LOG_LEVEL=log_level,
    )
    try:
        with running_server(env) as server:
            reply = chat(server.address)
            return reply, server.output(), fake.port
    finally:
        loop.run(fake.__aexit__(None, None, None))


def test_all_proxy_socks5_with_credentials_carries_the_call_and_hides_the_password(
    loop, socks_proxy, tmp_path
):
    reply, output, port = socks_call(loop, socks_proxy, tmp_path, "INFO")
    assert text_of(reply.message) == "via socks"
    assert socks_proxy.relayed == [f"{UPSTREAM_NAME}:{port}"]
    assert socks_proxy.refused == 0
    # The start-up log says which proxy is used - without its password.
    assert f"socks5://***@127.0.0.1:{socks_proxy.port}" in output
    assert "socks-pass-771" not in output
    assert KEY not in output


def test_debug_logging_does_not_show_the_socks_password(loop, socks_proxy, tmp_path):
    reply, output, _ = socks_call(loop, socks_proxy, tmp_path, "DEBUG")
    assert text_of(reply.message) == "via socks"
    assert "socks-pass-771" not in output
    assert KEY not in output


def test_no_proxy_covering_the_host_bypasses_the_proxy(loop, http_proxy, tmp_path):
    # 127.0.0.2 is loopback too (Linux routes 127/8 to lo) but not on the
    # always-bypassed list, so only NO_PROXY decides. The control run shows
    # that without NO_PROXY this very address goes through the proxy.
    fake = fake_upstream(loop, host="127.0.0.2", name="127.0.0.2")
    fake.script(openai_fake.chat("proxied"), openai_fake.chat("direct"))
    config = fake_upstream_config(tmp_path, fake.base_url)
    try:
        with running_server(
            isolated_env(AIGC_CONFIG=config, FAKE_API_KEY=KEY, HTTP_PROXY=http_proxy.url)
        ) as s:
            assert text_of(chat(s.address).message) == "proxied"
        assert http_proxy.relayed == [f"127.0.0.2:{fake.port}"]
        env = isolated_env(
            AIGC_CONFIG=config, FAKE_API_KEY=KEY, HTTP_PROXY=http_proxy.url, NO_PROXY="example.com,127.0.0.2"
        )
        with running_server(env) as server:
            assert text_of(chat(server.address).message) == "direct"
    finally:
        loop.run(fake.__aexit__(None, None, None))
    assert http_proxy.relayed == [f"127.0.0.2:{fake.port}"], "the second call must not use the proxy"
    assert len(fake.requests) == 2


def test_local_model_never_goes_through_a_proxy(loop, http_proxy, socks_proxy):
    # Every proxy variable set, NO_PROXY unset: llama.cpp on 127.0.0.1 is still reached directly.
    env = isolated_env(
        AIGC_LOCAL_ENABLED="true",
        HTTP_PROXY=http_proxy.url,
        HTTPS_PROXY=http_proxy.url,
        ALL_PROXY=socks_proxy.url,
    )
    with running_server(env) as server:
        reply = chat(server.address, model="smollm2")
    assert reply.usage.completion_tokens > 0
    assert http_proxy.relayed == [] and socks_proxy.relayed == []
    assert http_proxy.refused == 0 and socks_proxy.refused == 0


def test_http_proxy_credentials_are_used_and_never_shown(loop, tmp_path):
    proxy = HttpProxy(hosts={UPSTREAM_NAME: "127.0.0.1"}, username="proxyuser", password="proxy-pass-913")
    loop.run(proxy.start())
    fake = fake_upstream(loop)
    fake.script(openai_fake.chat("authenticated"))
    env = isolated_env(
        AIGC_CONFIG=fake_upstream_config(tmp_path, fake.base_url),
        FAKE_API_KEY=KEY,
        HTTP_PROXY=proxy.url,
        AIGC_LOG_LEVEL="DEBUG",
    )
    try:
        with running_server(env) as server:
            reply = chat(server.address)
            output = server.output()
    finally:
        loop.run(fake.__aexit__(None, None, None))
        loop.run(proxy.stop())
    assert text_of(reply.message) == "authenticated"
    assert proxy.relayed == [f"{UPSTREAM_NAME}:{fake.port}"] and proxy.refused == 0
    assert "proxy-pass-913" not in output
    assert "***@127.0.0.1" in output


def test_unreachable_proxy_is_unavailable_and_its_password_stays_hidden(tmp_path):
    proxy_url = f"http://someone:hidden-pass-555@127.0.0.1:{closed_port()}"
    env = isolated_env(
        AIGC_CONFIG=fake_upstream_config(tmp_path, f"http://{UPSTREAM_NAME}:443"),
        FAKE_API_KEY=KEY,
        HTTP_PROXY=proxy_url,
    )
    with running_server(env) as server:
        with pytest.raises(grpc.RpcError) as caught:
            chat(server.address)
        output = server.output()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "hidden-pass-555" not in (caught.value.details() or "")
    assert "hidden-pass-555" not in output
    assert KEY not in output


@pytest.mark.parametrize(
    "scheme",
    [
        "https",  # CONNECT refused: httpcore raises ProxyError, a connection failure
        "http",  # the forwarding proxy answers 407 itself; failure_for_http_status: UNREACHABLE
    ],
)
def test_proxy_refusing_our_credentials_is_unavailable(loop, tmp_path, scheme):
    proxy = HttpProxy(hosts={UPSTREAM_NAME: "127.0.0.1"}, username="proxyuser", password="right-pass")
    loop.run(proxy.start())
    env = isolated_env(
        AIGC_CONFIG=fake_upstream_config(tmp_path, f"{scheme}://{UPSTREAM_NAME}:4430"),
        FAKE_API_KEY=KEY,
        HTTP_PROXY=f"http://proxyuser:wrong-pass-202@127.0.0.1:{proxy.port}",
        HTTPS_PROXY=f"http://proxyuser:wrong-pass-202@127.0.0.1:{proxy.port}",
    )
    try:
        with running_server(env) as server:
            with pytest.raises(grpc.RpcError) as caught:
                chat(server.address)
            output = server.output()
    finally:
        loop.run(proxy.stop())
    assert proxy.refused >= 1 and proxy.relayed == []
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "wrong-pass-202" not in (caught.value.details() or "") + output


# --- reading the variables ---------------------------------------------------------------------


def test_lower_case_proxy_variable_wins_like_urllib_and_curl():
    settings = ProxySettings.from_env({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"})
    assert settings.https == "http://lower:2"


def test_proxy_settings_repr_hides_urls_and_describe_strips_credentials():
    settings = ProxySettings.from_env(
        {"ALL_PROXY": "socks5://u:secret-pw@proxy.example:1080", "NO_PROXY": "x"}
    )
    assert "secret-pw" not in repr(settings)
    assert settings.describe() == {"all_proxy": "socks5://***@proxy.example:1080", "no_proxy": "x"}
    assert redact_url("http://proxy.example:3128") == "http://proxy.example:3128"


def test_loopback_is_added_to_no_proxy_once():
    settings = ProxySettings.from_env({"HTTP_PROXY": "http://p:1", "NO_PROXY": "example.com, localhost"})
    assert settings.no_proxy_with_loopback() == "example.com,localhost,127.0.0.1,::1"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ALL_PROXY": "socks4://u:pw-xyz@h:1"}, "ALL_PROXY: proxy scheme 'socks4' is not supported"),
        ({"https_proxy": "http://u:pw-xyz@h:notaport"}, "https_proxy: not a valid proxy URL"),
        ({"HTTP_PROXY": "http://:1"}, "HTTP_PROXY: the proxy URL has no host"),
    ],
)
def test_bad_proxy_variables_fail_fast_without_echoing_the_value(variables, message):
    with pytest.raises(ConfigError) as caught:
        ProxySettings.from_env(variables)
    assert str(caught.value).startswith(message)
    assert "pw-xyz" not in str(caught.value)


def _self_signed(directory, hostname: str):
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", f"/CN={hostname}", "-addext", f"subjectAltName=DNS:{hostname}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
