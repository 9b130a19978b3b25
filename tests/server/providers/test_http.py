"""The HTTP client's pure parts: SSE framing and proxy selection (the network parts are
exercised by the conformance suite, tests/server/test_proxies.py and tests/e2e)."""

from __future__ import annotations

import pytest

from server.providers.http import SseEvent, SseParser, proxy_for


def parse(*pieces: bytes) -> list[SseEvent]:
    parser = SseParser()
    events = [e for piece in pieces for e in parser.feed(piece)]
    return events + parser.close()


def test_events_split_anywhere_and_every_line_ending():
    data = b'event: a\ndata: {"x": 1}\n\r\n: keep-alive\r\ndata: line one\r\ndata: line two\r\r\ndata: last'
    whole = parse(data)
    assert whole == [SseEvent("a", b'{"x": 1}'), SseEvent("", b"line one\nline two"), SseEvent("", b"last")]
    # Byte by byte (a CRLF split in two, a UTF-8 character split in three): the same events.
    assert parse(*(data[i : i + 1] for i in range(len(data)))) == whole
    chinese = "data: 你好\n\n".encode()
    assert parse(chinese[:7], chinese[7:9], chinese[9:]) == [SseEvent("", "你好".encode())]


def test_data_without_space_ids_and_retries_are_ignored():
    assert parse(b"id: 7\nretry: 100\ndata:tight\n\n") == [SseEvent("", b"tight")]
    assert parse(b"\n\n: only a comment\n\n") == []


ENV = {
    "HTTP_PROXY": "http://p:1",
    "HTTPS_PROXY": "http://s:2",
    "NO_PROXY": "internal.example,.corp,10.0.0.5:8000",
}


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("https://api.openai.com/v1", ENV, "http://s:2"),
        ("http://vllm:8000/v1", ENV, "http://p:1"),
        ("https://internal.example/v1", ENV, None),
        ("https://a.b.corp/v1", ENV, None),
        ("http://10.0.0.5:8000/v1", ENV, None),
        ("http://10.0.0.5:9000/v1", ENV, "http://p:1"),
        ("https://api.anthropic.com", {"ALL_PROXY": "socks5://u:p@s:1080"}, "socks5://u:p@s:1080"),
        (
            "https://x.example",
            {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1"},
            "http://lower:1",
        ),
        ("https://x.example", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ("https://x.example", {}, None),
    ],
)
def test_proxy_for(url, env, expected):
    assert proxy_for(url, env) == expected
