"""The Gemini wire format for the conformance suite (tests/fakes/gemini_fake.py bytes).

What a Gemini stream looks like, scenario by scenario: text comes in
pieces, one chunk each; a function call comes whole, args an object, in
its own chunk (parallel calls: several in one chunk); thoughts are text
parts with `thought: true`; a response without a function call carries its
thoughtSignature on a last, empty text part (a function call carries it on
its own part); usageMetadata is on every chunk, the full counts on the last.
"""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

from server.providers.gemini import GeminiProvider
from tests.conformance.vendor import CallSpec, Sent, UsageSpec, normalized
from tests.fakes import KEY
from tests.fakes import gemini_fake as gm
from tests.fakes.http import Recorded, Reply, Respond

PATH = "/v1beta/models/model-1:streamGenerateContent?alt=sse"
_FINISH = {"stop": "STOP", "max_tokens": "MAX_TOKENS", "content_filter": "SAFETY"}
_MODES = {"AUTO": "auto", "NONE": "none", "ANY": "required"}


def _usage(usage: UsageSpec | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    thoughts = usage.reasoning
    return gm.usage_metadata(
        usage.prompt, usage.completion - (thoughts or 0), thoughts=thoughts, cached=usage.cached
    )


def _running(usage: UsageSpec | None, generated: int) -> dict[str, Any] | None:
    """The usageMetadata of a chunk before the last: the prompt, and what was generated so far."""
    if usage is None:
        return None
    return gm.usage_metadata(usage.prompt, min(generated, usage.completion))


def _stream(chunks: list[dict[str, Any]], **options: Any) -> Reply:
    return gm.stream([gm.event(c) for c in chunks], **options)


def _text_chunks(pieces: list[str], usage: UsageSpec | None = None) -> list[dict[str, Any]]:
    return [gm.chunk([gm.text_part(p)], usage=_running(usage, i + 1)) for i, p in enumerate(pieces)]


def _args(call: CallSpec) -> dict[str, Any] | None:
    try:
        args = json.loads(call.arguments)
    except ValueError:
        return None
    return args if isinstance(args, dict) else None


class GeminiVendor:
    name = "gemini"
    sends_history_reasoning = True  # thought parts go back, signatures on them (wire.py says why)
    tool_error_flag = True  # a failed tool's result goes under "error"
    signs_reasoning = False  # Gemini signs the answer's parts (last text part, function calls), not thoughts
    returns_signed_reasoning_unasked = False
    arguments_are_objects = True  # functionCall.args is an object: never invalid JSON
    reasoning_for_high_effort: ClassVar[dict[str, Any]] = {"thinkingBudget": 24576}
    reasoning_for_budget_2048: ClassVar[dict[str, Any]] = {"thinkingBudget": 2048}
    http_failures = (
        ("400", gm.error(400, "INVALID_ARGUMENT", "Invalid value at 'generation_config.temperature'"),
         "BAD_REQUEST", 400),
        ("400-api-key-invalid",
         gm.error(400, "INVALID_ARGUMENT", f"API key not valid: {KEY}", reason="API_KEY_INVALID"),
         "AUTHENTICATION", 400),
        ("400-failed-precondition",
         gm.error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
         "BAD_REQUEST", 400),
        ("401", gm.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials"),
         "AUTHENTICATION", 401),
        ("403", gm.error(403, "PERMISSION_DENIED", "Permission denied"), "AUTHENTICATION", 403),
        ("404", gm.error(404, "NOT_FOUND", "models/model-1 is not found"), "MODEL_NOT_FOUND", 404),
        ("408", gm.error(408, "DEADLINE_EXCEEDED", "timeout"), "TIMEOUT", 408),
        ("413", gm.error(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit"),
         "CONTEXT_TOO_LONG", 413),
        ("429", gm.error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"), "RATE_LIMITED", 429),
        ("500", gm.error(500, "INTERNAL", "An internal error has occurred"), "SERVER_ERROR", 500),
        ("503", gm.error(503, "UNAVAILABLE", "The model is overloaded"), "SERVER_ERROR", 503),
        ("504", gm.error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete"),
         "TIMEOUT", 504),
    )  # fmt: skip

    # A key the typed request does not control, and where it lands: merged into our generationConfig.
    passthrough_example = (
        "generationConfig",
        {"topK": 40},
        lambda body: {"topK": body["generationConfig"]["topK"]},
    )

    def supported_usage(self, usage: UsageSpec) -> UsageSpec:
        """`usage` without the details Gemini never reports (cache writes)."""
        return UsageSpec(usage.prompt, usage.completion, usage.reasoning, usage.cached)

    def provider(self, base_url: str, **options: Any) -> GeminiProvider:
        options = {"max_retries": 0, "timeout_seconds": 10.0, **options}
        return GeminiProvider("gemini", base_url=base_url, api_key=KEY, **options)

    def rate_limited(self, retry_after: str) -> Reply:
        # Gemini says how long to wait in the body's RetryInfo, not in a Retry-After header.
        return gm.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay=f"{retry_after}s")

    def text_reply(self, pieces: list[str], *, finish: str = "stop", usage: UsageSpec | None = None) -> Reply:
        chunks = _text_chunks(pieces, usage)
        chunks[-1] = gm.chunk([gm.text_part(pieces[-1])], finish=_FINISH[finish], usage=_usage(usage))
        return _stream(chunks)

    def tool_calls_reply(
        self,
        calls: list[CallSpec],
        *,
        text: str = "",
        interleave: bool = False,
        usage: UsageSpec | None = None,
    ) -> Reply:
        chunks = [gm.chunk([gm.text_part(text)], usage=_running(usage, 1))] if text else []
        parsed = [_args(call) for call in calls]
        if any(args is None for args in parsed):
            # A model writing arguments that do not parse: Gemini sends no call, it ends the answer.
            malformed: dict[str, Any] = {
                "candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "index": 0}]
            }
            if usage is not None:
                malformed["usageMetadata"] = _usage(usage)
            return _stream([*chunks, malformed])
        # Thinking models sign the first call of a turn (docs: thought-signatures).
        parts = [
            gm.function_call_part(
                call.name,
                args or {},
                id=None if interleave else call.id,  # Gemini 2.x sends no ids: they are made up
                signature="c2lnLWNhbGw=" if i == 0 else None,
            )
            for i, (call, args) in enumerate(zip(calls, parsed, strict=True))
        ]
        if interleave:  # parallel calls come together
            chunks.append(gm.chunk(parts))
        else:
            chunks += [gm.chunk([part]) for part in parts]
        last = chunks[-1]["candidates"][0]
        last["finishReason"] = "STOP"
        if usage is not None:
            chunks[-1]["usageMetadata"] = _usage(usage)
        return _stream(chunks)

    def reasoning_reply(
        self, reasoning: list[str], text: list[str], *, signature: str = "", usage: UsageSpec | None = None
    ) -> Reply:
        chunks = [gm.chunk([gm.text_part(r, thought=True)]) for r in reasoning]
        chunks += [gm.chunk([gm.text_part(t)]) for t in text]
        # The signature of an answer without a function call: a last part with empty text.
        final = [gm.text_part("", signature=signature)] if signature else []
        chunks.append(gm.chunk(final, finish="STOP", usage=_usage(usage)))
        return _stream(chunks)

    def reasoning_then_tool_call_reply(
        self, reasoning: list[str], call: CallSpec, *, signature: str = ""
    ) -> Reply:
        chunks = [gm.chunk([gm.text_part(r, thought=True)]) for r in reasoning]
        args = _args(call) or {}
        part = gm.function_call_part(call.name, args, id=call.id, signature=signature or None)
        chunks.append(gm.chunk([part], finish="STOP"))
        return _stream(chunks)

    def cut_reply(self, pieces: list[str]) -> Reply:
        return _stream(_text_chunks(pieces), end="cut")  # no finishReason, the socket closes

    def held_reply(self, pieces: list[str]) -> Reply:
        return _stream(_text_chunks(pieces), end="hold")  # then silence, the connection open

    def stream_error_reply(self, pieces: list[str]) -> Reply:
        error = {"error": {"code": 500, "message": "An internal error has occurred", "status": "INTERNAL"}}
        return _stream([*_text_chunks(pieces), error])

    def malformed_reply(self) -> Reply:
        ok = gm.event(gm.chunk([gm.text_part("ok")]))
        done = gm.event(gm.chunk([], finish="STOP"))
        return gm.stream([ok, b'data: {"candidates": [{"content": \r\n\r\n', done])

    def html_reply(self) -> Reply:
        return Respond(200, b"<html>gateway</html>", content_type="text/html")

    # --- requests, read back -------------------------------------------------------------------

    def decode(self, recorded: Recorded) -> Sent:
        assert recorded.path.startswith("/v1beta/models/"), recorded.path
        model = recorded.path.removeprefix("/v1beta/models/").partition(":")[0]
        body = recorded.json()
        system = "".join(p["text"] for p in (body.get("systemInstruction") or {}).get("parts", ()))
        names: dict[str, str] = {}  # call id -> name, to check each functionResponse's name
        messages: list[tuple[str, list]] = []
        for content in body["contents"]:
            if content["role"] == "model":
                messages.append(("assistant", [_model_part(p, names) for p in content["parts"]]))
            elif any("functionResponse" in p for p in content["parts"]):
                messages.append(("tool", [_function_response(p, names) for p in content["parts"]]))
            else:
                messages.append(("user", [_user_part(p) for p in content["parts"]]))
        tools = [
            (f["name"], f.get("description", ""), f.get("parametersJsonSchema", {}))
            for tool in body.get("tools") or ()
            for f in tool["functionDeclarations"]
        ]
        config = body.get("generationConfig") or {}
        response_format = None
        if config.get("responseMimeType") == "application/json":
            schema = config.get("responseJsonSchema")
            response_format = ("json",) if schema is None else ("json_schema", schema)
        return normalized(
            Sent(
                model=model,
                system=system,
                messages=messages,
                tools=tools,
                tool_choice=_tool_choice(body.get("toolConfig")),
                response_format=response_format,
                max_output_tokens=config.get("maxOutputTokens"),
                stream=recorded.path == PATH.replace("model-1", model),
            )
        )

    def reasoning_sent(self, recorded: Recorded) -> dict[str, Any]:
        return (recorded.json().get("generationConfig") or {}).get("thinkingConfig") or {}


def _model_part(part: dict[str, Any], names: dict[str, str]) -> tuple:
    if "functionCall" in part:
        call = part["functionCall"]
        names[call["id"]] = call["name"]
        return ("tool_call", call["id"], call["name"], call["args"])
    if part.get("thought"):
        return ("reasoning", part["text"], part.get("thoughtSignature", ""))
    return ("text", part["text"])


def _function_response(part: dict[str, Any], names: dict[str, str]) -> tuple:
    """The inverse of the wrapping: {"error": x} is a failure, {"result": text} the text, else the object."""
    response = part["functionResponse"]
    assert response["name"] == names[response["id"]], "named after the call it answers"
    value = response["response"]
    is_error = set(value) == {"error"}
    if is_error or set(value) == {"result"}:
        value = next(iter(value.values()))
    content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return ("tool_result", response["id"], content, is_error)


def _user_part(part: dict[str, Any]) -> tuple:
    if "inlineData" in part:
        blob = part["inlineData"]
        return ("image", blob["mimeType"], base64.b64decode(blob["data"]))
    if "fileData" in part:
        return ("image_uri", part["fileData"]["fileUri"])
    return ("text", part["text"])


def _tool_choice(config: dict[str, Any] | None) -> str | None:
    if not config:
        return None
    calling = config["functionCallingConfig"]
    allowed = calling.get("allowedFunctionNames") or ()
    if calling["mode"] == "ANY" and len(allowed) == 1:
        return f"function:{allowed[0]}"
    return _MODES[calling["mode"]]


VENDOR = GeminiVendor()
