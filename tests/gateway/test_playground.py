"""The playground at /playground, in Debian's headless Chromium, against the whole stack
(`make run`: the real server with the local model behind the real Envoy): pick a model,
type a prompt, see the answer stream in with its usage; an unknown model's error; Stop
cancels the stream at the server; a reasoning effort asked of `demo-reasoner` (the demo
vendor, tests/fakes/demo_vendor.py, OpenAI's wire format) and its reasoning shown in a
collapsible block apart from the answer. A screenshot of the page lands in build/playground.png.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.fakes.demo_vendor import DemoReply
from tests.fakes.http import FakeServer
from tests.proxies.env import write_config
from tests.proxies.relays import LoopThread
from tests.support.browser import Browser, Page
from tests.support.stack import Stack, running_stack

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeServer]:
    """The demo vendor, serving `demo-reasoner` (reasoning_content, then the answer)."""
    with LoopThread() as loop:
        server = FakeServer()
        server.script(DemoReply())
        loop.run(server.__aenter__())
        try:
            yield server
        finally:
            loop.run(server.__aexit__(None, None, None))


@pytest.fixture(scope="module")
def stack(vendor: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The local model stays the default; demo-reasoner is one more model in the list.
    config = write_config(
        tmp_path_factory.mktemp("playground"),
        f"""
        [upstreams.demo]
        kind = "openai"
        base_url = "{vendor.base_url}/v1"
        requires_key = false
        max_retries = 0
        [[models]]
        id = "demo-reasoner"
        upstream = "demo"
        capabilities = ["reasoning"]
        """,
    )
    with running_stack({"AIGC_CONFIG": config}) as running:
        yield running


async def ready_page(browser: Browser, stack: Stack) -> Page:
    page = await browser.open(f"{stack.http}/playground")
    await page.wait_for("document.querySelector('#model').value === 'smollm2'")
    return page


async def send(page: Page, prompt: str) -> None:
    await page.evaluate(f"document.querySelector('#prompt').value = {json.dumps(prompt)}")
    await page.evaluate("document.querySelector('#send').click()")


LAST = "document.querySelector('#transcript li:last-child')"


async def test_a_streamed_answer_appears_as_it_is_generated_with_its_usage(stack: Stack):
    async with Browser() as browser:
        page = await ready_page(browser, stack)
        info = await page.evaluate("document.querySelector('#model-info').textContent")
        assert "local" in info and "tools" in info
        await page.evaluate("document.querySelector('#max-tokens').value = '120'")
        await send(page, "Tell me a short story about a lighthouse keeper.")
        # Text is on the page while the answer is still being generated (Stop is live).
        text = f"{LAST}.querySelector('.text').textContent"
        running = "!document.querySelector('#stop').disabled"
        seen_while_running = await page.wait_for(f"{running} && {text}.length > 0 && {text}", within=60)
        meta = await page.wait_for(f"!({running}) && {LAST}.querySelector('.meta').textContent", within=90)
        final = await page.evaluate(f"{LAST}.querySelector('.text').textContent")
        assert final.startswith(seen_while_running) and len(final) > len(seen_while_running)
        assert "completion tokens" in meta and "ms to first token" in meta and "local" in meta
        assert "error" not in await page.evaluate(f"{LAST}.className")
        (ROOT / "build").mkdir(exist_ok=True)
        (ROOT / "build" / "playground.png").write_bytes(await page.screenshot())


async def test_reasoning_is_asked_for_and_shown_in_a_collapsible_block(stack: Stack, vendor: FakeServer):
    async with Browser() as browser:
        page = await open_recording(browser, f"{stack.http}/playground")
        await page.wait_for("document.querySelector('#model').value === 'smollm2'")
        await page.evaluate(
            "document.querySelector('#model').value = 'demo-reasoner';"
            " document.querySelector('#reasoning').value = 'EFFORT_HIGH'"
        )
        await send(page, "Sea?")
        meta = await page.wait_for(f"{LAST} && {LAST}.querySelector('.meta').textContent", within=30)
        assert "completion tokens" in meta, meta
        # The effort reached the vendor, as OpenAI's reasoning_effort.
        assert vendor.requests[-1].json()["reasoning_effort"] == "high"
        block = f"{LAST}.querySelector('.text details.reasoning')"
        assert await page.evaluate(f"{block}.querySelector('summary').textContent") == "Reasoning"
        thoughts = await page.evaluate(f"{block}.querySelector('.thoughts').textContent")
        assert thoughts == "The user asks about the sea; keep it to one sentence."
        answer = await page.evaluate(f"{LAST}.querySelector('.text .answer').textContent")
        assert answer == "The sea covers most of the Earth."
        # It collapses, and stays apart from the answer; all of it under the page's CSP.
        await page.evaluate(f"{block}.querySelector('summary').click()")
        assert await page.evaluate(f"{block}.open") is False
        assert await page.evaluate("window.__csp") == []

        # "Show the reasoning" off: the effort is still asked, the reasoning not returned.
        await page.evaluate("document.querySelector('#show-reasoning').checked = false")
        await send(page, "Sea again?")
        await page.wait_for(
            f"{LAST}.querySelector('.meta').textContent.includes('completion tokens')", within=30
        )
        assert vendor.requests[-1].json()["reasoning_effort"] == "high"
        assert await page.evaluate(f"{block} === null")
        assert await page.evaluate(f"{LAST}.querySelector('.text').textContent") == (
            "The sea covers most of the Earth."
        )


async def test_an_unknown_model_shows_the_status_and_reason(stack: Stack):
    async with Browser() as browser:
        page = await ready_page(browser, stack)
        await page.evaluate(
            "const s = document.querySelector('#model'); s.add(new Option('no-such-model', 'no-such-model'));"
            " s.value = 'no-such-model'"
        )
        await send(page, "hi")
        meta = await page.wait_for(
            f"{LAST}.classList.contains('error') && {LAST}.querySelector('.meta').textContent"
        )
        assert "NOT_FOUND MODEL_NOT_FOUND" in meta and "no-such-model" in meta and "request " in meta


async def test_stop_cancels_the_stream_at_the_server(stack: Stack):
    async with Browser() as browser:
        page = await ready_page(browser, stack)
        # Greedy, so the count runs long and Stop comes first; sampled, it may end on its own.
        await page.evaluate("document.querySelector('#max-tokens').value = '1000'")
        await page.evaluate("document.querySelector('#temperature').value = '0'")
        await send(page, "Count from 1 to 1000.")
        await page.wait_for(f"{LAST}.querySelector('.text').textContent.length > 0", within=60)
        await page.evaluate("document.querySelector('#stop').click()")
        assert await page.wait_for(f"{LAST}.querySelector('.meta').textContent") == "stopped"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in stack.output().splitlines() if '"logger":"aigc.access"' in line]
        if any(line["method"] == "StreamChat" and line["code"] == "CANCELLED" for line in lines):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the server never saw the stream cancelled")


def test_the_page_and_its_assets_are_served_by_envoy_with_no_outside_reference(stack: Stack):
    import httpx

    for path, kind in [
        ("/playground", "text/html"),
        ("/playground/playground.js", "text/javascript"),
        ("/playground/playground.css", "text/css"),
    ]:
        response = httpx.get(f"{stack.http}{path}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "http://" not in response.text and "https://" not in response.text, (
            f"{path} loads from elsewhere"
        )


# Records every Content-Security-Policy violation of a page from its first byte.
CSP_RECORDER = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation',"
    " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)


async def open_recording(browser: Browser, url: str) -> Page:
    page = await browser.open("about:blank")
    await page.send("Page.addScriptToEvaluateOnNewDocument", source=CSP_RECORDER)
    await page.send("Page.navigate", url=url)
    return page


def test_pages_send_a_strict_csp_and_no_framing(stack: Stack):
    import httpx

    for path in ("/playground", "/docs"):
        headers = httpx.get(f"{stack.http}{path}").headers
        csp = headers["content-security-policy"]
        # Nothing from elsewhere, no inline script, no plugins, no framing.
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0], csp
        assert "http" not in csp, csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    for path in ("/playground/playground.js", "/docs/swagger-ui-bundle.js", "/openapi.json", "/v1/models"):
        headers = httpx.get(f"{stack.http}{path}").headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path


async def test_the_playground_works_under_its_csp(stack: Stack):
    async with Browser() as browser:
        page = await open_recording(browser, f"{stack.http}/playground")
        await page.wait_for("document.querySelector('#model').value === 'smollm2'")
        await page.evaluate("document.querySelector('#max-tokens').value = '8'")
        await send(page, "Say hi.")
        meta = await page.wait_for(f"{LAST} && {LAST}.querySelector('.meta').textContent", within=90)
        assert "completion tokens" in meta
        assert await page.evaluate("window.__csp") == []


async def test_swagger_ui_works_under_its_csp(stack: Stack):
    async with Browser() as browser:
        page = await open_recording(browser, f"{stack.http}/docs")
        # Rendered from /openapi.json: one block per operation.
        await page.wait_for("document.querySelectorAll('.swagger-ui .opblock').length >= 5")
        # Try it out: ListModels through the page, answered by the server.
        await page.evaluate("document.querySelector('.opblock-get .opblock-summary-control').click()")
        await page.wait_for("!!document.querySelector('.opblock-get .try-out__btn')")
        await page.evaluate("document.querySelector('.opblock-get .try-out__btn').click()")
        await page.wait_for("!!document.querySelector('.opblock-get .execute')")
        await page.evaluate("document.querySelector('.opblock-get .execute').click()")
        body = await page.wait_for(
            "document.querySelector('.opblock-get .live-responses-table')?.textContent", within=30
        )
        assert "smollm2" in body
        assert await page.evaluate("window.__csp") == []
