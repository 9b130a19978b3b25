"""The Generative Language API (v1beta) wire format: GenerateContentResponse
bodies, `alt=sse` streams (`data: {...}\\r\\n\\r\\n`, no end marker), and
google.rpc-style error bodies with ErrorInfo / RetryInfo details.

Parts as Gemini sends them: `text_part` (with `thought: true` for thinking,
and a `thoughtSignature` on any part), `function_call_part` (a whole call,
args an object, with or without an id), and `chunk` for one streamed
GenerateContentResponse. `usage_metadata` has the thinking and cache counts.

`generate()` answers like Gemini: as SSE on `:streamGenerateContent`, else
as one JSON body. `Embeddings()` answers `:embedContent` and
`:batchEmbedContents` from the request's own texts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from tests.fakes.http import ByRequest, Checked, Connection, FakeServer, Recorded, Reply, Respond, Stream


def response_body(
    text: str,
    *,
    finish: str | None = "STOP",
    usage: tuple[int, int] | None = (8, 4),
    thoughts: int = 0,
    response_id: str = "resp-g1",
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "gemini-fake",
        "responseId": response_id,
    }
    if usage is not None:
        body["usageMetadata"] = usage_metadata(usage[0], usage[1], thoughts=thoughts or None)
    return body


def text_part(text: str, *, thought: bool = False, signature: str | None = None) -> dict[str, Any]:
    """A text part; `thought` marks a thought summary, `signature` is its thoughtSignature."""
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def function_call_part(
    name: str, args: Mapping[str, Any], *, id: str | None = None, signature: str | None = None
) -> dict[str, Any]:
    """A whole function call, as Gemini sends it: args an object, the id only when the API set one."""
    call: dict[str, Any] = {"name": name, "args": dict(args)}
    if id is not None:
        call["id"] = id
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def usage_metadata(
    prompt: int, candidates: int, *, thoughts: int | None = None, cached: int | None = None
) -> dict[str, Any]:
    """usageMetadata: thinking tokens apart from candidatesTokenCount, cached ones inside promptTokenCount."""
    meta: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + (thoughts or 0),
    }
    if thoughts is not None:
        meta["thoughtsTokenCount"] = thoughts
    if cached is not None:
        meta["cachedContentTokenCount"] = cached
    return meta


def chunk(
    parts: list[dict[str, Any]],
    *,
    finish: str | None = None,
    usage: Mapping[str, Any] | None = None,
    response_id: str = "resp-gs",
) -> dict[str, Any]:
    """One streamed GenerateContentResponse: the parts generated since the last one."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "gemini-fake",
        "responseId": response_id,
    }
    if usage is not None:
        body["usageMetadata"] = dict(usage)
    return body


def generate(text: str, **options: Any) -> ByRequest:
    body = response_body(text, **options)
    return ByRequest(Respond(200, body), stream([event(body)]), lambda r: ":streamGenerateContent" in r.path)


def event(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\r\n\r\n"


def stream_events(
    pieces: list[str], *, finish: str | None = "STOP", usage: tuple[int, int] | None = (8, 4)
) -> list[bytes]:
    """One event per piece; usageMetadata on every chunk (as Gemini does), finishReason on the last."""
    events = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        done = (usage[0], usage[1] if last else i + 1) if usage else None
        events.append(
            event(response_body(piece, finish=finish if last else None, usage=done, response_id="resp-gs"))
        )
    return events


def blocked(reason: str = "SAFETY") -> Respond:
    return Respond(200, {"promptFeedback": {"blockReason": reason}, "usageMetadata": {"promptTokenCount": 3}})


def stream(events: list[bytes], **options: Any) -> Stream:
    return Stream(events, **options)


def error(
    code: int,
    status: str,
    message: str,
    *,
    reason: str | None = None,
    retry_delay: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Respond:
    details: list[dict[str, Any]] = []
    if reason:
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
        }
        details.append(info | {"metadata": {"service": "generativelanguage.googleapis.com"}})
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    body = {"error": {"code": code, "message": message, "status": status, "details": details}}
    return Respond(code, body, dict(headers or {}))


# Gemini 3's words when a function call of the history lost its thoughtSignature.
_NO_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for "
    "tools to work correctly, and missing thought_signature may lead to degraded model performance. "
    "Additional data, function call `default_api:{}` , position {}. Please refer to "
    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)


def signature_check(issued: Collection[str]) -> Callable[[Recorded], Respond | None]:
    """What Gemini 3 checks of the history, as a Checked rule (docs: gemini-api/docs/thought-signatures):
    the first functionCall part of every model turn carries a thoughtSignature, and one the API
    issued (`issued`: the fake's own); otherwise Gemini's 400, word for word."""

    def check(request: Recorded) -> Respond | None:
        for content in request.json().get("contents") or ():
            if content.get("role") != "model":
                continue
            calls = [p for p in content.get("parts") or () if "functionCall" in p]
            if not calls:
                continue
            first = calls[0]
            name = first["functionCall"].get("name")
            position = (content.get("parts") or []).index(first) + 1
            if "thoughtSignature" not in first:
                return error(400, "INVALID_ARGUMENT", _NO_SIGNATURE.format(name, position))
            if first["thoughtSignature"] not in issued:
                return error(400, "INVALID_ARGUMENT", "Corrupted thought signature.")
        return None

    return check


def with_signatures_checked(reply: Reply, issued: Collection[str]) -> Checked:
    """`reply`, unless the request breaks signature_check's rules."""
    return Checked(signature_check(issued), reply)


# --- embeddings ---------------------------------------------------------------------------------

# Gemini's limit per batchEmbedContents call.
MAX_EMBED_BATCH = 100


def vector_for(text: str, task: str | None) -> list[float]:
    """The vector the fake gives `text`: its length, its last character's code point,
    and which taskType came with it (0 for none), so a test can check all three."""
    tasks = ["RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY"]
    return [float(len(text)), float(ord(text[-1])), float(tasks.index(task) + 1 if task else 0)]


@dataclasses.dataclass
class Embeddings(Reply):
    """`:embedContent` and `:batchEmbedContents` as Gemini answers them, computed from
    the request: `{"embedding": {"values": [...]}}` or `{"embeddings": [...]}` in
    request order, no usage. A batch over 100 requests, or a request whose `model`
    is not the one in the URL, gets Gemini's 400 INVALID_ARGUMENT."""

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        recorded = server.requests[-1]
        body = recorded.json()
        url_model = recorded.path.split("/v1beta/", 1)[1].split(":", 1)[0]
        if recorded.path.split("?")[0].endswith(":embedContent"):
            answer = {"embedding": _embedding(body)}
            return await Respond(200, answer).send(conn, server)
        requests = body["requests"]
        if len(requests) > MAX_EMBED_BATCH:
            message = f"* BatchEmbedContentsRequest.requests: at most {MAX_EMBED_BATCH} requests in one batch"
            return await error(400, "INVALID_ARGUMENT", message).send(conn, server)
        if any(r.get("model") != url_model for r in requests):
            message = "* BatchEmbedContentsRequest.model: each request's model must match the batch's model"
            return await error(400, "INVALID_ARGUMENT", message).send(conn, server)
        return await Respond(200, {"embeddings": [_embedding(r) for r in requests]}).send(conn, server)


def _embedding(request: Mapping[str, Any]) -> dict[str, Any]:
    (part,) = request["content"]["parts"]
    values = vector_for(part["text"], request.get("taskType"))
    if "outputDimensionality" in request:
        values = values[: request["outputDimensionality"]]
    return {"values": values}
