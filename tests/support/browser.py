"""Debian's headless Chromium driven over the DevTools protocol, for tests of real pages.

    async with Browser() as browser:
        page = await browser.open("http://127.0.0.1:8000/playground")
        await page.wait_for("document.querySelector('#model option') !== null")
        await page.evaluate("document.querySelector('#prompt').value = 'hi'")
        png = await page.screenshot()

No driver package: Chromium's own remote-debugging endpoint (a WebSocket per
page) and aiohttp's WebSocket client, both already here. `make browser`
installs the chromium package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

import aiohttp


class BrowserError(RuntimeError):
    pass


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.console: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json(timeout=60)
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, within: float = 30) -> Any:
        """Polls a JavaScript expression until it is truthy (at most `within` seconds); returns its value."""
        deadline = time.monotonic() + within
        while True:
            try:
                value = await self.evaluate(condition)
            except BrowserError as exc:  # the page is still loading
                value, last_error = None, exc
            else:
                last_error = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {within}s: {condition} ({last_error})")
            await asyncio.sleep(0.05)

    async def screenshot(self) -> bytes:
        result = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])


class Browser:
    def __init__(self, width: int = 1200, height: int = 760) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        assert binary, "chromium is missing: `make browser` installs Debian's package"
        self._binary = binary
        self._size = (width, height)
        self._profile = tempfile.mkdtemp(prefix="chromium-")
        self._process: subprocess.Popen[str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._endpoint = ""

    async def __aenter__(self) -> Browser:
        # Popen only spawns (no wait); its output is read in a thread below.
        self._process = subprocess.Popen(  # noqa: ASYNC220
            [
                self._binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={self._size[0]},{self._size[1]}",
                f"--user-data-dir={self._profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group: the renderers and helpers it forks go with it.
            start_new_session=True,
        )
        # Chromium prints where it listens: "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID".
        assert self._process.stderr is not None
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(self._process.stderr.readline)
            seen.append(line)
            found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                self._endpoint = f"http://127.0.0.1:{found.group(1)}"
                break
            if not line and self._process.poll() is not None:
                break
        if not self._endpoint:
            await self.__aexit__(None, None, None)
            raise BrowserError("chromium did not start:\n" + "".join(seen[-20:]))
        self._session = aiohttp.ClientSession()
        return self

    async def open(self, url: str) -> Page:
        """A new tab at `url`, with console capture on."""
        assert self._session is not None
        async with self._session.put(f"{self._endpoint}/json/new?{url}") as response:
            target = json.loads(await response.text())
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        page = Page(ws)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        return page

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    await asyncio.to_thread(self._process.wait, 10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    await asyncio.to_thread(self._process.wait)
            # Helpers that outlive the main process still write into the profile
            # (rmtree once failed with "Directory not empty"): end them too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        for attempt in itertools.count():
            try:
                shutil.rmtree(self._profile)
                break
            except FileNotFoundError:
                break
            except OSError:
                if attempt == 20:
                    raise
                await asyncio.sleep(0.1)  # a killed helper may take a moment to go


__all__ = ["Browser", "BrowserError", "Page"]
