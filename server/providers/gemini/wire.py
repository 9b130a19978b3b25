"""The Generative Language API (Gemini, v1beta) wire format, both directions:
pure functions over dicts.

    request_body(request)          ProviderRequest -> GenerateContentRequest body
    problems(request)              what Gemini cannot take, as field path -> why
    StreamTranslator.feed(event)   one SSE event's GenerateContentResponse -> Chunk (or None)
    StreamTranslator.last()        the closing Chunk: finish reason and usage
    (errors.py classifies error answers and error events)

Translation rules (field names are the REST JSON names of
google/ai/generativelanguage/v1beta/*.proto):
- System messages are joined with blank lines into one `systemInstruction`
  text part. User and assistant messages are `contents` of role `user` and
  `model`; a completion's prompt is one user turn; `user_id` has no field.
- User images: inline bytes (and `data:` URLs) are `inlineData {mimeType,
  data}` (base64); other URIs are `fileData {mimeType, fileUri}`, which
  Gemini fetches itself (Files API, external HTTP(S), `gs://`).
- Assistant text parts are text parts; tool calls are `functionCall {id,
  name, args}` parts with the arguments parsed (the core checked they are a
  JSON object). A part's `signature` is that part's `thoughtSignature`,
  unchanged: Gemini 3 refuses a function call turn whose signatures are
  missing (docs: gemini-api/docs/thought-signatures).
- Reasoning parts go back as thought parts `{text, thought: true,
  thoughtSignature}`. Gemini's thinking guide says not to remove or modify
  thought parts in the history, as they hold the signatures the model needs
  to continue its reasoning; a reasoning part with only a signature (how a
  signature that came with no text of its own is returned, see below) keeps
  it that way. Encrypted reasoning (another vendor's) has no Gemini field and
  is refused by `problems`.
- The results of one turn's tool calls (consecutive ROLE_TOOL messages) are
  one `user` content of `functionResponse {id, name, response}` parts, as
  Gemini wants every response of a parallel call in one turn. `name` is the
  name of the call with that id earlier in the conversation; `response` is
  the content parsed when it is a JSON object, else `{"result": content}`;
  a failed tool's content goes under `{"error": ...}` (parsed or not), the
  key Gemini's FunctionResponse documents for failures.
- Tools are one Tool of `functionDeclarations`, their JSON Schema passed
  as `parametersJsonSchema` (omitted when the function takes no arguments).
  Not the OpenAPI-subset `parameters`: that field rejects standard keywords
  (`additionalProperties` is "Unknown name ... Cannot find field"), cannot
  hold a node with several types or `anyOf` beside other keys, and Google
  added JSON Schema to every supported model for tools and structured
  output (Nov 2025). A schema passes through unchanged, no lossy conversion.
- Tool choice is `toolConfig.functionCallingConfig`: AUTO, NONE, ANY, and a
  named function is ANY with `allowedFunctionNames: [name]`.
- TYPE_JSON is `responseMimeType: application/json`; TYPE_JSON_SCHEMA adds
  `responseJsonSchema` (the JSON Schema twin of `responseSchema`; Gemini
  always constrains its output to it, `strict` has nothing to set).
- Reasoning is `generationConfig.thinkingConfig`: `thinkingBudget` from
  `budget_tokens` (0 turns thinking off on models that allow it, e.g. 2.5
  Flash; 2.5 Pro refuses 0) or from the effort (`EFFORT_BUDGETS`: 1024,
  8192, 24576 tokens - inside the documented ranges of every 2.5 model,
  Pro 128-32768, Flash 0-24576, Flash-Lite 512-24576);
  `includeThoughts: true` when the reasoning is to be returned.
- Sampling: generationConfig maxOutputTokens, temperature, topP,
  stopSequences, seed, presencePenalty, frequencyPenalty. vendor_params
  merge deep, so a caller may add `generationConfig.topK` next to ours; the
  reserved paths (`RESERVED_KEYS`) are what the typed request controls, in
  both spellings Gemini reads (lowerCamel and snake_case), and a snake_case
  twin of an object we build (`generation_config`) is refused by `problems`.

Streamed answers: each SSE event is a whole GenerateContentResponse; only
`candidates[0]` is read (candidateCount is reserved).
- A `text` part extends the open text part; `thought: true` text is
  reasoning, returned only when asked for. A `functionCall` comes whole:
  one tool_call part with the args as JSON text, the API's id or a made-up
  `call_<hex>`. Every part gets our own stable index.
- `thoughtSignature` can come on any part (docs: thought-signatures): it is
  that part's `signature`, on the delta it came with. Streams also send it
  on a part with empty text, after the text it belongs to: it then goes on
  the open text or reasoning part. A second signature starts a new part (no
  signature is lost, and two signed parts are never merged). A signature
  with no part to go on, or on a thought that is not to be returned, is a
  reasoning part of its own with empty text: Gemini needs it back, so it is
  returned even when reasoning is not (Part.reasoning in content.proto).
- finishReason: STOP (TOOL_CALLS when the answer called functions),
  MAX_TOKENS, the safety and policy reasons (CONTENT_FILTER), anything else
  (MALFORMED_FUNCTION_CALL, LANGUAGE, ...) OTHER. A stream has no end
  marker: it is complete when a chunk had a finishReason and the body ended.
- usageMetadata comes on every chunk, the last one counts: prompt =
  promptTokenCount, completion = candidatesTokenCount + thoughtsTokenCount
  (thinking is generated and billed as output), reasoning =
  thoughtsTokenCount, cached = cachedContentTokenCount; details only when
  Gemini sent them.
- A blocked prompt (`promptFeedback.blockReason`, no candidates) is
  CONTENT_FILTERED (`block_reason`).

Errors are google.rpc Status bodies `{"error": {code, message, status,
details}}`: the canonical `status` decides, the HTTP status where it is
more specific (401, 403, 404, 408, 413, 429); an ErrorInfo reason
API_KEY_INVALID (Gemini's 400 for a bad key) is AUTHENTICATION; the wait is
the Retry-After header or the RetryInfo `retryDelay` ("30s").
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, tool_pb2
from server.providers.base import Chunk, ProviderRequest, parts_of, result_images, result_text
from server.providers.vendor_params import merge, struct_to_dict

_Effort = generation_pb2.ReasoningConfig
#: Thinking budgets (tokens) for each reasoning effort.
EFFORT_BUDGETS = {
    _Effort.EFFORT_LOW: 1024,
    _Effort.EFFORT_MEDIUM: 8192,
    _Effort.EFFORT_HIGH: 24576,
}
_TOOL_MODES = {
    tool_pb2.ToolChoice.MODE_AUTO: "AUTO",
    tool_pb2.ToolChoice.MODE_NONE: "NONE",
    tool_pb2.ToolChoice.MODE_REQUIRED: "ANY",
}
_FILTERED = (
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
)
_FINISH = {
    "STOP": generation_pb2.FINISH_REASON_STOP,
    "MAX_TOKENS": generation_pb2.FINISH_REASON_MAX_TOKENS,
    **dict.fromkeys(_FILTERED, generation_pb2.FINISH_REASON_CONTENT_FILTER),
}
_INT32 = (-(2**31), 2**31 - 1)

#: Body paths the typed request controls, as we spell them (lowerCamel).
#: `candidateCount` too: only the first candidate is read.
_CAMEL_RESERVED = (
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    *(
        f"generationConfig.{key}"
        for key in (
            "maxOutputTokens",
            "temperature",
            "topP",
            "stopSequences",
            "seed",
            "presencePenalty",
            "frequencyPenalty",
            "candidateCount",
            "responseMimeType",
            "responseSchema",
            "responseJsonSchema",
            "_responseJsonSchema",
            "thinkingConfig.thinkingBudget",
            "thinkingConfig.includeThoughts",
        )
    ),
)
#: Objects we build whose snake_case twin would be a second copy of them
#: (path of the twin -> the spelling to use instead).
_SNAKE_TWINS = {
    "generation_config": "generationConfig",
    "generationConfig.thinking_config": "generationConfig.thinkingConfig",
}


def snake_case(name: str) -> str:
    """`maxOutputTokens` -> `max_output_tokens` (the proto field name; a leading `_` stays)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _spellings(path: str) -> set[str]:
    """Every spelling of a body path Gemini reads as the same field: each segment
    lowerCamel (the JSON name) or snake_case (the proto name)."""
    out = {""}
    for segment in path.split("."):
        out = {f"{head}.{s}" if head else s for head in out for s in {segment, snake_case(segment)}}
    return out


#: Body paths the typed request controls (vendor_params may not set them), in
#: both spellings: Gemini parses proto JSON, which accepts the field's
#: lowerCamel JSON name and its snake_case proto name alike, so
#: `generationConfig.max_output_tokens` or `system_instruction` would
#: otherwise slip past a camelCase-only check and reach the vendor.
RESERVED_KEYS = frozenset(spelling for path in _CAMEL_RESERVED for spelling in _spellings(path))


# --- requests -------------------------------------------------------------------------------


def stream_path(upstream_model: str) -> str:
    """The path of the streaming method for a model (`models/` added unless the name has a collection)."""
    name = upstream_model if "/" in upstream_model else f"models/{upstream_model}"
    return f"/v1beta/{urllib.parse.quote(name, safe='/')}:streamGenerateContent"


def request_body(request: ProviderRequest) -> dict[str, Any]:
    """The GenerateContentRequest body (the same for the streaming method)."""
    body: dict[str, Any] = {}
    config = _sampling(request.config)
    chat = request.chat
    if chat is None:
        body["contents"] = [{"role": "user", "parts": [{"text": request.prompt or ""}]}]
    else:
        system = [_joined_text(m) for m in chat.messages if m.role == content_pb2.ROLE_SYSTEM]
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        body["contents"] = contents(chat.messages)
        if chat.tools:
            body["tools"] = [{"functionDeclarations": [function_declaration(t) for t in chat.tools]}]
            calling = function_calling_config(chat.tool_choice) if chat.HasField("tool_choice") else None
            if calling is not None:
                body["toolConfig"] = {"functionCallingConfig": calling}
        if chat.HasField("response_format"):
            config.update(response_format(chat.response_format))
        if chat.HasField("reasoning"):
            thinking = thinking_config(chat.reasoning)
            if thinking:
                config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    return merge(body, request.vendor_params)


def _sampling(c: generation_pb2.GenerationConfig) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if c.HasField("max_output_tokens"):
        config["maxOutputTokens"] = c.max_output_tokens
    if c.HasField("temperature"):
        config["temperature"] = c.temperature
    if c.HasField("top_p"):
        config["topP"] = c.top_p
    if c.stop_sequences:
        config["stopSequences"] = list(c.stop_sequences)
    if c.HasField("seed"):
        config["seed"] = c.seed
    if c.HasField("presence_penalty"):
        config["presencePenalty"] = c.presence_penalty
    if c.HasField("frequency_penalty"):
        config["frequencyPenalty"] = c.frequency_penalty
    return config


def contents(conversation: Sequence[content_pb2.Message]) -> list[dict[str, Any]]:
    """The conversation without its system messages, as Gemini `contents`."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the function responses
    previous_role = content_pb2.ROLE_UNSPECIFIED
    for message in conversation:
        role = message.role
        if role == content_pb2.ROLE_SYSTEM:
            continue
        parts = parts_of(message)
        if role == content_pb2.ROLE_TOOL:
            responses = [function_response(p.tool_result, names) for p in parts]
            # Images a tool returned follow the function responses in the same turn
            # (every Gemini model takes them there; functionResponse.parts is Gemini 3 only).
            images = [image_part(i) for p in parts for i in result_images(p.tool_result)]
            if previous_role == content_pb2.ROLE_TOOL:
                # One turn holds every result of the calls, the responses before any image.
                earlier = out[-1]["parts"]
                answered = [p for p in earlier if "functionResponse" in p]
                shown = [p for p in earlier if "functionResponse" not in p]
                out[-1]["parts"] = answered + responses + shown + images
            else:
                out.append({"role": "user", "parts": responses + images})
        elif role == content_pb2.ROLE_ASSISTANT:
            for p in parts:
                if p.WhichOneof("data") == "tool_call":
                    names[p.tool_call.id] = p.tool_call.name
            out.append({"role": "model", "parts": [_model_part(p) for p in parts]})
        else:
            out.append({"role": "user", "parts": [_user_part(p) for p in parts]})
        previous_role = role
    return out


def _joined_text(message: content_pb2.Message) -> str:
    return "".join(p.text for p in parts_of(message))


def _user_part(part: content_pb2.Part) -> dict[str, Any]:
    if part.WhichOneof("data") == "image":
        return image_part(part.image)
    return {"text": part.text}


def _model_part(part: content_pb2.Part) -> dict[str, Any]:
    kind = part.WhichOneof("data")
    if kind == "tool_call":
        call = part.tool_call
        out: dict[str, Any] = {
            "functionCall": {"id": call.id, "name": call.name, "args": json.loads(call.arguments or "{}")}
        }
    elif kind == "reasoning":
        out = {"text": part.reasoning.text, "thought": True}
    else:
        out = {"text": part.text}
    if part.signature:
        out["thoughtSignature"] = part.signature
    return out


def image_part(image: content_pb2.Image) -> dict[str, Any]:
    """`inlineData` for bytes and `data:` URLs, else `fileData` with the URI."""
    if image.WhichOneof("source") == "uri":
        if not image.uri.startswith("data:"):
            file: dict[str, Any] = {"fileUri": image.uri}
            if image.mime_type:
                file["mimeType"] = image.mime_type
            return {"fileData": file}
        head, _, data = image.uri.partition(",")  # base64, checked by the core
        mime = head.removeprefix("data:").removesuffix(";base64") or image.mime_type
        return {"inlineData": {"mimeType": mime, "data": data}}
    return {"inlineData": {"mimeType": image.mime_type, "data": base64.b64encode(image.data).decode()}}


def function_response(result: content_pb2.ToolResult, names: Mapping[str, str]) -> dict[str, Any]:
    """A tool result as `functionResponse`, named after the call it answers."""
    text = result_text(result)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    value: Any = parsed if isinstance(parsed, dict) else text
    if result.is_error:
        response = {"error": value}
    elif isinstance(value, dict):
        response = value
    else:
        response = {"result": value}
    return {
        "functionResponse": {
            "id": result.tool_call_id,
            "name": names.get(result.tool_call_id, ""),
            "response": response,
        }
    }


def function_declaration(declaration: tool_pb2.Tool) -> dict[str, Any]:
    function = declaration.function
    out: dict[str, Any] = {"name": function.name}
    if function.description:
        out["description"] = function.description
    if function.HasField("parameters"):
        out["parametersJsonSchema"] = struct_to_dict(function.parameters)
    return out


def function_calling_config(choice: tool_pb2.ToolChoice) -> dict[str, Any] | None:
    """The functionCallingConfig for a tool choice; None for the default (AUTO)."""
    if choice.function_name:
        return {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}
    mode = _TOOL_MODES.get(choice.mode)
    return {"mode": mode} if mode else None


def response_format(fmt: generation_pb2.ResponseFormat) -> dict[str, Any]:
    """The generationConfig keys for a response format (none for text)."""
    if fmt.type == generation_pb2.ResponseFormat.TYPE_JSON:
        return {"responseMimeType": "application/json"}
    if fmt.type == generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
        return {"responseMimeType": "application/json", "responseJsonSchema": struct_to_dict(fmt.schema)}
    return {}


def thinking_config(reasoning: generation_pb2.ReasoningConfig) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if reasoning.HasField("budget_tokens"):
        config["thinkingBudget"] = reasoning.budget_tokens
    elif reasoning.effort in EFFORT_BUDGETS:
        config["thinkingBudget"] = EFFORT_BUDGETS[reasoning.effort]
    if reasoning.include_reasoning:
        config["includeThoughts"] = True
    return config


def problems(request: ProviderRequest) -> dict[str, str]:
    """Field path -> why, for what Gemini cannot take (Provider.validate)."""
    out: dict[str, str] = {}
    for twin, spelling in _SNAKE_TWINS.items():
        if _has_path(request.vendor_params, twin):
            out[f"vendor_params.{twin}"] = (
                f"Gemini reads it as {spelling}, which this service builds from the typed request; "
                f"put the keys under {spelling} (they are merged with ours)"
            )
    config = request.config
    if config.HasField("seed") and not _INT32[0] <= config.seed <= _INT32[1]:
        out["generation_config.seed"] = "Gemini takes a 32-bit seed (-2147483648 to 2147483647)"
    chat = request.chat
    if chat is not None:
        _history_problems(chat, out)
    return out


def _has_path(params: Mapping[str, Any], path: str) -> bool:
    node: Any = params
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _history_problems(chat: aigc_service_pb2.ChatRequest, out: dict[str, str]) -> None:
    for i, message in enumerate(chat.messages):
        for j, part in enumerate(message.parts):
            if part.WhichOneof("data") == "reasoning" and part.reasoning.encrypted_content:
                out[f"messages[{i}].parts[{j}].reasoning.encrypted_content"] = (
                    "Gemini has no field for encrypted reasoning (it comes from another provider); "
                    "leave the part out"
                )


# --- streamed answers ---------------------------------------------------------------------------


class StreamTranslator:
    """Turns one answer's SSE events into Chunks, keeping the part indexes stable.

    `feed` takes each event's decoded JSON (not an `{"error": ...}` event,
    nor a blocked prompt - see `block_reason`) and returns a Chunk of part
    deltas, or None. Once the body ended, `finished` says whether a
    finishReason came, and `last()` is the closing Chunk. Raises
    KeyError/TypeError/AttributeError/IndexError/ValueError on an event of
    the wrong shape; the provider reports those as MALFORMED_RESPONSE.
    """

    def __init__(self, *, include_reasoning: bool = False) -> None:
        self.include_reasoning = include_reasoning
        self.finished = False
        self.usage: generation_pb2.Usage | None = None
        self.response_id = ""
        self._reason = ""
        self._called = False
        self._next_index = 0
        # Kind, our index, and whether it has a signature, of the last text or
        # reasoning part: a run of deltas extends one part.
        self._open_kind = ""
        self._open_index = -1
        self._open_signed = False

    def feed(self, event: Mapping[str, Any]) -> Chunk | None:
        if not self.response_id:
            self.response_id = str(event.get("responseId") or "")
        usage = usage_of(event.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        parts: list[content_pb2.Part] = []
        candidates = event.get("candidates") or ()
        if candidates:
            candidate = candidates[0]
            for part in (candidate.get("content") or {}).get("parts") or ():
                self._part(part, parts)
            reason = candidate.get("finishReason")
            if reason and reason != "FINISH_REASON_UNSPECIFIED":
                self._reason = str(reason)
                self.finished = True
        return Chunk(parts=parts, response_id=self.response_id) if parts else None

    def last(self) -> Chunk:
        """The finish reason and the usage, after the body ended (`finished` must be true)."""
        finish = _FINISH.get(self._reason, generation_pb2.FINISH_REASON_OTHER)
        if finish == generation_pb2.FINISH_REASON_STOP and self._called:
            finish = generation_pb2.FINISH_REASON_TOOL_CALLS
        return Chunk(finish=finish, usage=self.usage, response_id=self.response_id)

    def _part(self, part: Mapping[str, Any], out: list[content_pb2.Part]) -> None:
        signature = part.get("thoughtSignature") or ""
        if not isinstance(signature, str):
            raise TypeError(f"thoughtSignature is {type(signature).__name__}")
        call = part.get("functionCall")
        if call is not None:
            out.append(self._function_call(call, signature))
            return
        thought = bool(part.get("thought"))
        if "text" not in part and not thought and not signature:
            return  # not a part of ours (the request asked for none: code execution, images)
        text = part.get("text") or ""
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}")
        if thought and not self.include_reasoning:
            text = ""  # not asked for; a signature on it is still kept
        delta = self._text("reasoning" if thought else "text", text, signature, thought)
        if delta is not None:
            out.append(delta)

    def _function_call(self, call: Mapping[str, Any], signature: str) -> content_pb2.Part:
        name = call["name"]
        args = call.get("args")
        if args is None:
            args = {}
        if not isinstance(name, str) or not isinstance(args, dict):
            raise TypeError("functionCall needs a name string and an args object")
        self._open_kind = ""  # what follows a call is a new part
        self._called = True
        call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        return content_pb2.Part(
            index=self._new_index(),
            tool_call=content_pb2.ToolCall(
                id=str(call_id), name=name, arguments=json.dumps(args, ensure_ascii=False)
            ),
            signature=signature,
        )

    def _text(self, kind: str, text: str, signature: str, thought: bool) -> content_pb2.Part | None:
        if not text and not signature:
            return None
        if text:
            extend = self._open_kind == kind and not (signature and self._open_signed)
        else:
            # A signature alone: it belongs to the part before it (a thought's
            # signature only to a thought), else it is a reasoning part of its own.
            usable = ("reasoning",) if thought else ("text", "reasoning")
            extend = self._open_kind in usable and not self._open_signed
            kind = self._open_kind if extend else "reasoning"
        if not extend:
            self._open_kind, self._open_index, self._open_signed = kind, self._new_index(), False
        self._open_signed = self._open_signed or bool(signature)
        delta = content_pb2.Part(index=self._open_index, signature=signature)
        if kind == "text":
            delta.text = text
        else:
            delta.reasoning.text = text
        return delta

    def _new_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index


def usage_of(meta: Mapping[str, Any] | None) -> generation_pb2.Usage | None:
    if not meta:
        return None
    prompt = int(meta.get("promptTokenCount") or 0)
    thoughts = meta.get("thoughtsTokenCount")
    completion = int(meta.get("candidatesTokenCount") or 0) + int(thoughts or 0)
    usage = generation_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    if thoughts is not None:
        usage.reasoning_tokens = int(thoughts)
    cached = meta.get("cachedContentTokenCount")
    if cached is not None:
        usage.cached_prompt_tokens = int(cached)
    return usage


def block_reason(event: Mapping[str, Any]) -> str:
    """Why Gemini refused the prompt ("" when it did not): a blockReason and no candidates."""
    feedback = event.get("promptFeedback")
    if isinstance(feedback, Mapping) and feedback.get("blockReason") and not event.get("candidates"):
        return str(feedback["blockReason"])
    return ""


__all__ = [
    "EFFORT_BUDGETS",
    "RESERVED_KEYS",
    "StreamTranslator",
    "block_reason",
    "contents",
    "function_calling_config",
    "function_declaration",
    "function_response",
    "image_part",
    "problems",
    "request_body",
    "response_format",
    "stream_path",
    "thinking_config",
    "usage_of",
]
