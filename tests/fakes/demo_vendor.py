"""A fake OpenAI-compatible vendor to try typed content without a vendor key.

    python -m tests.fakes.demo_vendor --port 8100      # then: AIGC_CONFIG=config/demo.toml make run

It speaks OpenAI's exact streaming wire format (tests/fakes/openai_fake.py)
and answers from what the request says, so a reader can see each feature
travel through the service:

- model `demo-reasoner`: streams `reasoning_content` (a reasoning model like
  DeepSeek-R1), then the answer;
- any other model: if the last user message has images, it says what it
  received (count, types, sizes); if tools were sent and the user asks about
  the weather, it calls the first tool; after a tool result, it quotes it.

Nothing here is a model: it is the test fake, served on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Any

from tests.fakes import openai_fake as oa
from tests.fakes.http import Connection, FakeServer, Reply


class DemoReply(Reply):
    """Answers every request from its own content (see the module docstring)."""

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        server._replies.append(self)  # serve forever
        body = server.requests[-1].json()
        deltas, options = _answer(body)
        events = oa.delta_events(deltas, **options)
        return await oa.stream(events, pause=0.05).send(conn, server)


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    usage = oa.usage_object(len(json.dumps(messages)) // 4, 20)
    if body.get("model") == "demo-reasoner":
        thoughts = ["The user asks", " about the sea;", " keep it to", " one sentence."]
        answer = ["The sea", " covers most", " of the Earth."]
        deltas = [{"reasoning_content": t} for t in thoughts] + [{"content": a} for a in answer]
        usage["completion_tokens_details"] = {"reasoning_tokens": 12}
        return deltas, {"finish": "stop", "usage": usage}
    if last.get("role") == "tool":
        return [{"content": f"The tool said: {last.get('content')}"}], {"finish": "stop", "usage": usage}
    content = last.get("content")
    if isinstance(content, list):
        images = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        if images:
            described = ", ".join(_describe(url) for url in images)
            text = f"I received {len(images)} image(s): {described}."
            return [{"content": w + " "} for w in text.split(" ")], {"finish": "stop", "usage": usage}
    tools = body.get("tools") or []
    if tools and "weather" in json.dumps(content).lower():
        name = tools[0]["function"]["name"]
        args = json.dumps({"city": "Paris"})
        deltas = [oa.tool_call_delta(0, id="call_demo_1", name=name)]
        deltas += [oa.tool_call_delta(0, arguments=args[i : i + 4]) for i in range(0, len(args), 4)]
        return deltas, {"finish": "tool_calls", "usage": usage}
    return [{"content": "Hello from the demo vendor."}], {"finish": "stop", "usage": usage}


def _describe(url: str) -> str:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        return f"{head[5:].split(';')[0]}, {len(base64.b64decode(data))} bytes inline"
    return f"a URL ({url})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    server = FakeServer(port=args.port)
    server.script(DemoReply())
    async with server:
        print(f"demo vendor on {server.base_url}/v1 (OpenAI protocol); Ctrl-C stops it", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
