"""Anthropic's Messages API wire format, both directions: pure functions over dicts.

    chat_body(request)             ProviderRequest -> /v1/messages body (stream: true)
    problems(request)              what the API would refuse, as field path -> why
    StreamTranslator.feed(event)   one SSE event's JSON -> Chunk (or None)
    (errors.py classifies error answers and `error` events)

Translation rules (API version 2023-06-01, see AnthropicProvider):
- System messages become the top-level `system`, joined with blank lines.
  Roles must alternate, so consecutive user-side messages (ROLE_USER and
  ROLE_TOOL) are one `user` message, its `tool_result` blocks first (the API
  wants them before any text); consecutive assistant messages are one too. A
  message that is one text block is sent as a plain string.
- Assistant parts: text -> `text`; a tool call -> `tool_use` with `input` the
  parsed arguments (`{}` when empty); reasoning -> `thinking` {thinking,
  signature}, or `redacted_thinking` {data} when it holds `encrypted_content`.
  Thinking must go back exactly as it came (the API checks the signature), so
  it is sent unchanged; an unsigned reasoning part (another provider's) cannot
  be verified and is left out.
- Images are `image` blocks: inline bytes and `data:` URLs as a `base64`
  source, http(s) URLs as a `url` source (the API fetches them; `gs://` is
  refused in `problems`). A tool result is `tool_result` {tool_use_id,
  content, is_error}.
- Tools are {name, description, input_schema} (an empty object schema when
  the function takes no arguments). Tool choice: MODE_AUTO -> auto, MODE_NONE
  -> none, MODE_REQUIRED -> any, a function name -> tool; unset -> not sent.
- TYPE_JSON_SCHEMA is `output_config.format` {type: json_schema, schema}, the
  schema exactly as the caller wrote it: Anthropic's structured outputs take
  a subset of JSON Schema (every object needs `additionalProperties: false`;
  numeric and string-length constraints are not supported), and the API
  answers 400 (UPSTREAM_INVALID_REQUEST, with its message) for a schema
  outside it rather than us narrowing the caller's contract in silence.
  TYPE_JSON has no Anthropic equivalent: structured outputs need every key
  declared, so a generic object schema would only allow `{}`. It is
  JSON_INSTRUCTION appended to the system prompt - best effort, not
  constrained; use TYPE_JSON_SCHEMA for a guarantee.
- Reasoning is extended thinking, `thinking: {type: enabled, budget_tokens}`:
  the Claude 4.5 models of the catalog take only that (`output_config.effort`
  came with Opus 4.5, adaptive thinking with the 4.6 models, which still
  accept budgets; Claude 4.7 and later refuse them with a 400). An effort
  is a budget (EFFORT_BUDGETS: low 1024 - the API's minimum -, medium 4096,
  high 16384); `budget_tokens` is sent as given, 0 as `{type: disabled}`. The
  API needs 1024 <= budget < max_tokens (refused in `problems`, with field
  paths); without `max_output_tokens`, max_tokens is the budget plus
  DEFAULT_MAX_TOKENS. `display` is "summarized" with include_reasoning and
  "omitted" without (newer models omit by default): then thinking blocks
  carry only their signature. include_reasoning alone (no effort, no budget)
  leaves `thinking` to the model's default. With thinking on, the API allows
  tool choice auto or none only (refused in `problems`); its limits on
  temperature and top_p while thinking are left to the API's 400.
  `output_config.effort` is not ours: vendor_params may set it, for models
  that have it (Opus 4.5 and later).
- max_tokens is required: DEFAULT_MAX_TOKENS (1024) when unset. temperature,
  top_p, stop_sequences as given; user_id is `metadata.user_id`. There is no
  seed, presence_penalty or frequency_penalty in the Messages API: they are
  not sent.
- Streamed answers: `content_block_*` events by Anthropic's block index,
  mapped to our own part indexes in order of each part's first delta (a
  block that yields nothing, e.g. an empty text block or a server tool block,
  takes no index). text_delta -> text; input_json_delta -> tool call argument
  fragments, every delta repeating id and name (a tool_use without fragments
  folds to its start `input`, i.e. "{}"); thinking_delta -> reasoning text;
  signature_delta -> the part's `signature`, whole; redacted_thinking ->
  reasoning `encrypted_content`. Reasoning is returned when include_reasoning
  is set; without it, only what must go back next turn - signed thinking and
  redacted thinking - as one part at the block's end.
- `message_delta` has the stop reason (end_turn, stop_sequence -> STOP;
  max_tokens, model_context_window_exceeded -> MAX_TOKENS; tool_use ->
  TOOL_CALLS; refusal -> CONTENT_FILTER; anything else -> OTHER) and the
  cumulative usage; `message_stop` ends the answer - a stream without it was
  cut. Usage: prompt = input + cache_creation + cache_read tokens (Anthropic
  counts cached tokens apart); cached_prompt_tokens = cache_read,
  cache_write_prompt_tokens = cache_creation, each only when reported;
  completion = output_tokens; reasoning_tokens =
  `output_tokens_details.thinking_tokens` when reported.
- Errors: `error.type` decides (in bodies and in `error` events, where the
  status is 200), the HTTP status only when the type is unknown; see
  _ERROR_TYPES. A prompt over the context window is a 400
  invalid_request_error with only prose to tell it apart: BAD_REQUEST (we do
  not parse messages); a 413 request_too_large is CONTEXT_TOO_LONG.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, tool_pb2
from server.providers.base import Chunk, ProviderRequest, parts_of
from server.providers.vendor_params import merge, struct_to_dict

#: max_tokens when the caller sets no max_output_tokens (the API requires one).
DEFAULT_MAX_TOKENS = 1024
#: The smallest thinking budget the API accepts.
MIN_THINKING_BUDGET = 1024
#: Thinking budget per reasoning effort.
EFFORT_BUDGETS = {
    generation_pb2.ReasoningConfig.EFFORT_LOW: 1024,
    generation_pb2.ReasoningConfig.EFFORT_MEDIUM: 4096,
    generation_pb2.ReasoningConfig.EFFORT_HIGH: 16384,
}
#: Appended to the system prompt for ResponseFormat.TYPE_JSON.
JSON_INSTRUCTION = (
    "Answer with JSON only: one JSON value (an object unless asked otherwise), "
    "with no text before or after it and no Markdown code fences."
)

_FINISH = {
    "end_turn": generation_pb2.FINISH_REASON_STOP,
    "stop_sequence": generation_pb2.FINISH_REASON_STOP,
    "max_tokens": generation_pb2.FINISH_REASON_MAX_TOKENS,
    "model_context_window_exceeded": generation_pb2.FINISH_REASON_MAX_TOKENS,
    "tool_use": generation_pb2.FINISH_REASON_TOOL_CALLS,
    "refusal": generation_pb2.FINISH_REASON_CONTENT_FILTER,
}
_TOOL_CHOICE = {
    tool_pb2.ToolChoice.MODE_AUTO: {"type": "auto"},
    tool_pb2.ToolChoice.MODE_NONE: {"type": "none"},
    tool_pb2.ToolChoice.MODE_REQUIRED: {"type": "any"},
}
#: Body keys (and object paths) the typed request controls (vendor_params may
#: not set them). `output_format` is the beta name of `output_config.format`.
RESERVED_KEYS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "stop_sequences",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "output_config.format",
        "output_format",
    }
)


# --- requests -------------------------------------------------------------------------------


def chat_body(request: ProviderRequest) -> dict[str, Any]:
    """The /v1/messages streaming request body."""
    chat = request.chat
    if chat is None:  # a completion: one user turn (Anthropic has no raw completion)
        system, conversation = "", [{"role": "user", "content": request.prompt or ""}]
    else:
        system, conversation = messages(chat.messages)
    body: dict[str, Any] = {"model": request.upstream_model, "messages": conversation}
    thinking = None
    if chat is not None:
        fmt = chat.response_format.type
        if fmt == generation_pb2.ResponseFormat.TYPE_JSON:
            system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
        elif fmt == generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
            schema = struct_to_dict(chat.response_format.schema)
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        if chat.tools:
            body["tools"] = [tool(t) for t in chat.tools]
            choice = tool_choice(chat.tool_choice) if chat.HasField("tool_choice") else None
            if choice is not None:
                body["tool_choice"] = choice
        if chat.HasField("reasoning"):
            thinking = thinking_config(chat.reasoning)
            if thinking is not None:
                body["thinking"] = thinking
    if system:
        body["system"] = system
    c = request.config
    if c.HasField("max_output_tokens"):
        body["max_tokens"] = c.max_output_tokens
    else:
        body["max_tokens"] = DEFAULT_MAX_TOKENS + ((thinking or {}).get("budget_tokens") or 0)
    if c.HasField("temperature"):
        body["temperature"] = c.temperature
    if c.HasField("top_p"):
        body["top_p"] = c.top_p
    if c.stop_sequences:
        body["stop_sequences"] = list(c.stop_sequences)
    if request.user_id:
        body["metadata"] = {"user_id": request.user_id}
    body["stream"] = True
    return merge(body, request.vendor_params)


def messages(conversation: Sequence[content_pb2.Message]) -> tuple[str, list[dict[str, Any]]]:
    """(the `system` text, the alternating `messages`) of a conversation."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in conversation:
        parts = parts_of(message)
        if message.role == content_pb2.ROLE_SYSTEM:
            system.append("".join(p.text for p in parts))
            continue
        if message.role == content_pb2.ROLE_ASSISTANT:
            role, blocks = "assistant", [b for b in map(_assistant_block, parts) if b is not None]
        else:  # ROLE_USER and ROLE_TOOL speak as the user
            role, blocks = "user", [_user_block(p) for p in parts]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for message in out:
        content = message["content"]
        if message["role"] == "user":
            # Stable: tool results first, the rest in order.
            content.sort(key=lambda block: block["type"] != "tool_result")
        if len(content) == 1 and content[0]["type"] == "text":
            message["content"] = content[0]["text"]
    return "\n\n".join(system), out


def _assistant_block(part: content_pb2.Part) -> dict[str, Any] | None:
    kind = part.WhichOneof("data")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "tool_call":
        call = part.tool_call
        return {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": json.loads(call.arguments or "{}"),
        }
    if kind == "reasoning":
        if part.reasoning.encrypted_content:
            return {"type": "redacted_thinking", "data": part.reasoning.encrypted_content}
        if part.signature:
            return {"type": "thinking", "thinking": part.reasoning.text, "signature": part.signature}
    return None  # unsigned reasoning: the API cannot verify it


def _user_block(part: content_pb2.Part) -> dict[str, Any]:
    kind = part.WhichOneof("data")
    if kind == "image":
        return image_block(part.image)
    if kind == "tool_result":
        result = part.tool_result
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result.tool_call_id}
        if result.parts:
            block["content"] = [_result_block(p) for p in result.parts]
        elif result.content:
            block["content"] = result.content
        if result.is_error:
            block["is_error"] = True
        return block
    return {"type": "text", "text": part.text}


def _result_block(part: content_pb2.ToolResultPart) -> dict[str, Any]:
    if part.WhichOneof("data") == "image":
        return image_block(part.image)
    return {"type": "text", "text": part.text}


def image_block(image: content_pb2.Image) -> dict[str, Any]:
    """An `image` block: inline bytes (and data: URLs) as base64, other URLs fetched by the API."""
    if image.WhichOneof("source") == "uri":
        uri = image.uri
        if not uri.startswith("data:"):
            return {"type": "image", "source": {"type": "url", "url": uri}}
        # Checked by the core: "data:<mime>;base64,<data>".
        head, _, data = uri.partition(",")
        mime = head.removeprefix("data:").split(";")[0] or image.mime_type
    else:
        mime, data = image.mime_type, base64.b64encode(image.data).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}


def tool(declaration: tool_pb2.Tool) -> dict[str, Any]:
    function = declaration.function
    out: dict[str, Any] = {"name": function.name}
    if function.description:
        out["description"] = function.description
    out["input_schema"] = (
        struct_to_dict(function.parameters)
        if function.HasField("parameters")
        else {"type": "object", "properties": {}}
    )
    return out


def tool_choice(choice: tool_pb2.ToolChoice) -> dict[str, Any] | None:
    if choice.function_name:
        return {"type": "tool", "name": choice.function_name}
    known = _TOOL_CHOICE.get(choice.mode)
    return dict(known) if known else None


def thinking_config(reasoning: generation_pb2.ReasoningConfig) -> dict[str, Any] | None:
    """The `thinking` object for a ReasoningConfig; None leaves it to the model's default."""
    if reasoning.HasField("budget_tokens"):
        if reasoning.budget_tokens == 0:
            return {"type": "disabled"}
        budget = reasoning.budget_tokens
    elif reasoning.effort in EFFORT_BUDGETS:
        budget = EFFORT_BUDGETS[reasoning.effort]
    else:
        return None
    display = "summarized" if reasoning.include_reasoning else "omitted"
    return {"type": "enabled", "budget_tokens": budget, "display": display}


def problems(request: ProviderRequest) -> dict[str, str]:
    """Field path -> why, for what the Messages API would refuse (see Provider.validate)."""
    chat = request.chat
    if chat is None:
        return {}
    out: dict[str, str] = {}
    reasoning = chat.reasoning
    thinking = thinking_config(reasoning) if chat.HasField("reasoning") else None
    budget = (thinking or {}).get("budget_tokens")
    config = request.config
    if reasoning.HasField("budget_tokens") and 0 < reasoning.budget_tokens < MIN_THINKING_BUDGET:
        out["reasoning.budget_tokens"] = (
            f"Anthropic needs a thinking budget of at least {MIN_THINKING_BUDGET} tokens "
            "(or 0 for no thinking)"
        )
    elif budget is not None and config.HasField("max_output_tokens") and budget >= config.max_output_tokens:
        if reasoning.HasField("budget_tokens"):
            out["reasoning.budget_tokens"] = "must be less than generation_config.max_output_tokens"
        else:
            name = generation_pb2.ReasoningConfig.Effort.Name(reasoning.effort)
            out["reasoning.effort"] = (
                f"{name} is a thinking budget of {budget} tokens at Anthropic, which must be less than "
                "generation_config.max_output_tokens: raise it, leave it unset, or lower the effort"
            )
    if budget is not None and chat.tools and chat.HasField("tool_choice"):
        choice = chat.tool_choice
        if choice.function_name or choice.mode == tool_pb2.ToolChoice.MODE_REQUIRED:
            out["tool_choice"] = (
                "Anthropic allows only MODE_AUTO or MODE_NONE while the model thinks (reasoning)"
            )
    _image_problems(chat, out)
    return out


def _image_problems(chat: aigc_service_pb2.ChatRequest, out: dict[str, str]) -> None:
    for i, message in enumerate(chat.messages):
        for j, part in enumerate(message.parts):
            if part.WhichOneof("data") == "image" and part.image.uri.startswith("gs://"):
                out[f"messages[{i}].parts[{j}].image.uri"] = (
                    "Anthropic fetches only https:// and http:// URLs: send the bytes instead"
                )


# --- streamed answers ---------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Block:
    """One of Anthropic's content blocks while it streams."""

    kind: str  # "text" | "thinking" | "redacted_thinking" | "tool_use" | "other" (ignored)
    index: int = -1  # our part index, allocated with the block's first part
    id: str = ""
    name: str = ""
    input: Any = None  # a tool_use's `input` at its start
    has_arguments: bool = False
    text: list[str] = dataclasses.field(default_factory=list)  # thinking held back (not asked for)
    signature: str = ""
    signed: bool = False  # the signature went out


class StreamTranslator:
    """Turns one answer's SSE events into Chunks, keeping the part indexes stable.

    `feed` takes each event's decoded JSON (not `error` events: the provider
    raises those) and returns a Chunk or None (nothing of ours in it: ping,
    message_start, an empty block). `finished` is set by `message_stop`.
    Raises KeyError/TypeError/AttributeError/ValueError on an event of the
    wrong shape; the provider reports those as MALFORMED_RESPONSE.
    """

    def __init__(self, *, include_reasoning: bool = False) -> None:
        self.include_reasoning = include_reasoning
        self.finished = False
        self._response_id = ""
        self._blocks: dict[int, _Block] = {}
        self._next_index = 0
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def feed(self, event: Mapping[str, Any]) -> Chunk | None:
        kind = event["type"]
        if kind == "message_start":
            message = event["message"]
            self._response_id = message.get("id") or ""
            self._add_usage(message.get("usage"))
            return None
        if kind == "content_block_start":
            return self._chunk(self._start(int(event["index"]), event["content_block"]))
        if kind == "content_block_delta":
            return self._chunk(self._delta(self._blocks[int(event["index"])], event["delta"]))
        if kind == "content_block_stop":
            return self._chunk(self._stop(self._blocks[int(event["index"])]))
        if kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self._stop_reason = str(reason)
            self._add_usage(event.get("usage"))
            return None
        if kind == "message_stop":
            if self._stop_reason is None:
                raise ValueError("message_stop without a stop_reason")
            self.finished = True
            finish = _FINISH.get(self._stop_reason, generation_pb2.FINISH_REASON_OTHER)
            return Chunk(finish=finish, usage=usage_of(self._usage), response_id=self._response_id)
        return None  # ping, and event types added later (the API may add them)

    def _chunk(self, parts: list[content_pb2.Part]) -> Chunk | None:
        return Chunk(parts=parts, response_id=self._response_id) if parts else None

    def _start(self, key: int, block: Mapping[str, Any]) -> list[content_pb2.Part]:
        kind = block["type"]
        if kind == "text":
            self._blocks[key] = state = _Block("text")
            return self._text(state, block.get("text") or "")
        if kind == "tool_use":
            self._blocks[key] = state = _Block("tool_use", id=block["id"], name=block["name"])
            state.input = block.get("input")
            return [self._call(state, "")]  # the call is known from its start
        if kind == "thinking":
            self._blocks[key] = state = _Block("thinking", signature=block.get("signature") or "")
            return self._thinking(state, block.get("thinking") or "")
        if kind == "redacted_thinking":
            self._blocks[key] = _Block("redacted_thinking")
            reasoning = content_pb2.Reasoning(encrypted_content=block["data"])
            return [content_pb2.Part(index=self._new_index(), reasoning=reasoning)]
        self._blocks[key] = _Block("other")  # server tools and their results: not ours to return
        return []

    def _delta(self, state: _Block, delta: Mapping[str, Any]) -> list[content_pb2.Part]:
        kind = delta["type"]
        if state.kind == "text" and kind == "text_delta":
            return self._text(state, _string(delta["text"]))
        if state.kind == "tool_use" and kind == "input_json_delta":
            fragment = _string(delta["partial_json"])
            if not fragment:
                return []
            state.has_arguments = True
            return [self._call(state, fragment)]
        if state.kind == "thinking" and kind == "thinking_delta":
            return self._thinking(state, _string(delta["thinking"]))
        if state.kind == "thinking" and kind == "signature_delta":
            state.signature = _string(delta["signature"])
            return self._signed(state)
        return []  # citations, server tool input, delta types added later

    def _stop(self, state: _Block) -> list[content_pb2.Part]:
        if state.kind == "tool_use" and not state.has_arguments:
            # No fragments: the arguments are the start's `input` ({} for none).
            return [self._call(state, json.dumps(state.input or {}, ensure_ascii=False))]
        if state.kind == "thinking" and state.signature and not state.signed:
            return self._signed(state)  # a signature that came with the block's start
        return []

    def _text(self, state: _Block, text: str) -> list[content_pb2.Part]:
        if not text:
            return []
        return [content_pb2.Part(index=self._index_of(state), text=text)]

    def _call(self, state: _Block, arguments: str) -> content_pb2.Part:
        call = content_pb2.ToolCall(id=state.id, name=state.name, arguments=arguments)
        return content_pb2.Part(index=self._index_of(state), tool_call=call)

    def _thinking(self, state: _Block, text: str) -> list[content_pb2.Part]:
        if not text:
            return []
        if not self.include_reasoning:
            state.text.append(text)  # goes out whole with the signature, if one comes
            return []
        return [content_pb2.Part(index=self._index_of(state), reasoning=content_pb2.Reasoning(text=text))]

    def _signed(self, state: _Block) -> list[content_pb2.Part]:
        state.signed = True
        # Asked for: the text went out already. Not asked for: the block must
        # still go back next turn, unchanged - text (usually empty, with
        # display "omitted") and signature together.
        text = "" if self.include_reasoning else "".join(state.text)
        reasoning = content_pb2.Reasoning(text=text)
        return [content_pb2.Part(index=self._index_of(state), reasoning=reasoning, signature=state.signature)]

    def _index_of(self, state: _Block) -> int:
        if state.index < 0:
            state.index = self._new_index()
        return state.index

    def _new_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def _add_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative: later values replace earlier ones.
        if isinstance(usage, Mapping) and usage:
            self._usage = {**(self._usage or {}), **{k: v for k, v in usage.items() if v is not None}}
        elif usage is not None and not isinstance(usage, Mapping):
            raise TypeError(f"usage is {type(usage).__name__}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def usage_of(usage: Mapping[str, Any] | None) -> generation_pb2.Usage | None:
    """Anthropic's usage counts in our terms (see the module docstring)."""
    if not usage:
        return None
    cache_write = usage.get("cache_creation_input_tokens")
    cache_read = usage.get("cache_read_input_tokens")
    prompt = int(usage.get("input_tokens") or 0) + int(cache_write or 0) + int(cache_read or 0)
    completion = int(usage.get("output_tokens") or 0)
    out = generation_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    if cache_read is not None:
        out.cached_prompt_tokens = int(cache_read)
    if cache_write is not None:
        out.cache_write_prompt_tokens = int(cache_write)
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
    if thinking is not None:
        out.reasoning_tokens = int(thinking)
    return out


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "EFFORT_BUDGETS",
    "JSON_INSTRUCTION",
    "MIN_THINKING_BUDGET",
    "RESERVED_KEYS",
    "StreamTranslator",
    "chat_body",
    "image_block",
    "messages",
    "problems",
    "thinking_config",
    "tool",
    "tool_choice",
    "usage_of",
]
