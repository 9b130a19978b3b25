"""Anthropic wire translations on their own: dicts in, dicts out (no network), and
the few things only a real HTTP exchange shows (headers, byte-split events).

The conformance suite proves the behaviour shared with every vendor; these
are the Anthropic-specific rules: thinking blocks and their signatures going
back unchanged, redacted thinking, role alternation, thinking budgets and
max_tokens, cache usage, stop reasons, error types."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Sequence

import pytest
from google.protobuf import json_format

from aigc.v1 import content_pb2, generation_pb2
from server.core.fold import Folder
from server.errors import UpstreamError, UpstreamFailure
from server.providers.anthropic import API_VERSION, AnthropicProvider, errors, wire
from server.providers.base import Chunk, ProviderRequest
from server.providers.http import SseParser
from tests.conformance.requests import TIME, WEATHER, chat, user
from tests.fakes import KEY
from tests.fakes import anthropic_fake as an
from tests.fakes.http import FakeServer, split_inside

F = generation_pb2
U = UpstreamFailure


def request(chat_request=None, **fields) -> ProviderRequest:
    chat_request = chat_request or chat(user("hi"))
    return ProviderRequest(
        upstream_model="claude-x", chat=chat_request, config=chat_request.generation_config, **fields
    )


def body_of(*messages, **fields) -> dict:
    return wire.chat_body(request(chat(*messages, **fields)))


def translate(events: Sequence[bytes], *, include_reasoning: bool = False) -> list[Chunk]:
    """What the provider does with an answer's bytes, minus the network."""
    translator = wire.StreamTranslator(include_reasoning=include_reasoning)
    parser = SseParser()
    chunks = []
    for sse in [*parser.feed(b"".join(events)), *parser.close()]:
        chunk = translator.feed(json.loads(sse.data))
        if chunk is not None:
            chunks.append(chunk)
    assert translator.finished
    return chunks


def fold(chunks: Sequence[Chunk]) -> Folder:
    folder = Folder()
    for chunk in chunks:
        folder.add(chunk)
    return folder


def assistant(parts: Sequence[content_pb2.Part]) -> dict:
    """The folded answer as a client sends it back: an assistant message of the same parts."""
    return {"role": "ROLE_ASSISTANT", "parts": [json_format.MessageToDict(p) for p in parts]}


# --- requests ---------------------------------------------------------------------------------


def test_sampling_fields_system_and_metadata():
    r = request(
        chat(
            {"role": "ROLE_SYSTEM", "content": "Be brief."},
            user("hello"),
            {"role": "ROLE_ASSISTANT", "content": "hi"},
            {"role": "ROLE_SYSTEM", "content": "Answer in Chinese."},
            user("again"),
            generation_config={"max_output_tokens": 64, "temperature": 0.2, "top_p": 0.8,
                               "stop_sequences": ["##"], "seed": 3, "presence_penalty": 0.5,
                               "frequency_penalty": 0.5},
        ),
        user_id="u-7",
        vendor_params={"top_k": 5},
    )  # fmt: skip
    assert wire.chat_body(r) == {
        "model": "claude-x",
        "system": "Be brief.\n\nAnswer in Chinese.",
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "again"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.8,
        "stop_sequences": ["##"],
        "metadata": {"user_id": "u-7"},
        "top_k": 5,
        "stream": True,
    }  # no seed, no penalties: the Messages API has none


def test_max_tokens_defaults_and_a_completion_is_one_user_message():
    assert body_of(user("hi"))["max_tokens"] == wire.DEFAULT_MAX_TOKENS == 1024
    prompt = ProviderRequest(upstream_model="claude-x", prompt="Once upon")
    assert wire.chat_body(prompt) == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "Once upon"}],
        "max_tokens": 1024,
        "stream": True,
    }


def test_consecutive_user_side_messages_merge_with_tool_results_first():
    body = body_of(
        {"role": "ROLE_SYSTEM", "content": "Use the tools."},
        user("Paris weather and Tokyo time?"),
        {"role": "ROLE_SYSTEM", "content": "Be exact."},
        user("Quickly."),
        {"role": "ROLE_ASSISTANT", "parts": [
            {"tool_call": {"id": "a", "name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"tool_call": {"id": "b", "name": "get_time"}},
        ]},
        {"role": "ROLE_TOOL", "parts": [{"tool_result": {"tool_call_id": "a", "content": "18C"}}]},
        {"role": "ROLE_TOOL",
         "parts": [{"tool_result": {"tool_call_id": "b", "content": "down", "is_error": True}}]},
        user("And tomorrow?"),
        tools=[WEATHER, TIME],
    )  # fmt: skip
    assert body["system"] == "Use the tools.\n\nBe exact."
    assert body["messages"] == [
        # Two user messages around a system message: one user turn.
        {"role": "user", "content": [{"type": "text", "text": "Paris weather and Tokyo time?"},
                                     {"type": "text", "text": "Quickly."}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "a", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "b", "name": "get_time", "input": {}},
        ]},
        # Two tool messages and a user message: one user turn, the results first.
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "b", "content": "down", "is_error": True},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]  # fmt: skip


def test_tool_results_go_first_in_a_user_turn_whatever_order_they_came_in():
    conversation = chat(
        user("Weather?"),
        {"role": "ROLE_ASSISTANT", "parts": [{"tool_call": {"id": "a", "name": "get_weather"}}]},
        user("(also this)"),
        {"role": "ROLE_TOOL", "parts": [{"tool_result": {"tool_call_id": "a", "content": "18C"}}]},
    ).messages  # out of order for the core (it refuses this), not for the translation
    _, messages = wire.messages(conversation)
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "text"]


def test_tools_and_tool_choices():
    body = body_of(user("hi"), tools=[{"function": {"name": "ping"}}, WEATHER])
    assert body["tools"] == [
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
        {"name": "get_weather", "description": "Current weather in a city",
         "input_schema": WEATHER["function"]["parameters"]},
    ]  # fmt: skip
    assert "tool_choice" not in body
    for choice, sent in [
        ({"mode": "MODE_AUTO"}, {"type": "auto"}),
        ({"mode": "MODE_NONE"}, {"type": "none"}),
        ({"mode": "MODE_REQUIRED"}, {"type": "any"}),
        ({"function_name": "ping"}, {"type": "tool", "name": "ping"}),
    ]:
        assert (
            body_of(user("hi"), tools=[{"function": {"name": "ping"}}], tool_choice=choice)["tool_choice"]
            == sent
        )


def test_images_inline_data_url_and_url():
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    body = body_of(
        {"role": "ROLE_USER", "parts": [
            {"image": {"mime_type": "image/png", "data": png}},
            {"image": {"uri": f"data:image/png;base64,{png}"}},
            {"image": {"mime_type": "image/jpeg", "uri": "https://example.com/cat.jpg"}},
        ]}
    )  # fmt: skip
    inline = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    assert body["messages"][0]["content"] == [
        inline,
        inline,
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_json_schema_is_sent_as_given_and_json_mode_is_an_instruction():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}  # fmt: skip
    body = body_of(user("n?"), response_format={"type": "TYPE_JSON_SCHEMA", "schema": schema})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert isinstance(body["output_config"]["format"]["schema"]["properties"]["n"], dict)
    assert "system" not in body
    plain = body_of(user("n?"), response_format={"type": "TYPE_JSON"})
    assert plain["system"] == wire.JSON_INSTRUCTION and "output_config" not in plain
    with_system = body_of({"role": "ROLE_SYSTEM", "content": "Be brief."}, user("n?"),
                          response_format={"type": "TYPE_JSON"})  # fmt: skip
    assert with_system["system"] == f"Be brief.\n\n{wire.JSON_INSTRUCTION}"


def test_vendor_params_merge_into_output_config_next_to_the_format():
    r = request(
        chat(user("n?"), response_format={"type": "TYPE_JSON_SCHEMA", "schema": {"type": "object"}}),
        vendor_params={"output_config": {"effort": "low"}},
    )
    assert wire.chat_body(r)["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}},
        "effort": "low",
    }


# --- thinking budgets and max_tokens ------------------------------------------------------------


def test_effort_is_a_thinking_budget_and_max_tokens_makes_room_for_it():
    for effort, budget in [("EFFORT_LOW", 1024), ("EFFORT_MEDIUM", 4096), ("EFFORT_HIGH", 16384)]:
        body = body_of(user("hi"), reasoning={"effort": effort})
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget, "display": "omitted"}
        assert body["max_tokens"] == budget + wire.DEFAULT_MAX_TOKENS
    body = body_of(user("hi"), reasoning={"effort": "EFFORT_LOW", "include_reasoning": True},
                   generation_config={"max_output_tokens": 3000})  # fmt: skip
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024, "display": "summarized"}
    assert body["max_tokens"] == 3000


def test_budget_tokens_is_sent_as_given_and_zero_turns_thinking_off():
    body = body_of(user("hi"), reasoning={"budget_tokens": 2000})
    assert (body["thinking"]["budget_tokens"], body["max_tokens"]) == (2000, 3024)
    off = body_of(user("hi"), reasoning={"budget_tokens": 0})
    assert (off["thinking"], off["max_tokens"]) == ({"type": "disabled"}, 1024)
    # include_reasoning alone leaves thinking to the model's default.
    assert "thinking" not in body_of(user("hi"), reasoning={"include_reasoning": True})


def test_problems_budget_rules_with_field_paths():
    def problems(**fields):
        return wire.problems(request(chat(user("hi"), **fields)))

    (why,) = problems(reasoning={"budget_tokens": 512}).values()
    assert why == "Anthropic needs a thinking budget of at least 1024 tokens (or 0 for no thinking)"
    assert problems(reasoning={"budget_tokens": 0}) == {}
    assert problems(reasoning={"budget_tokens": 1024}) == {}
    assert "reasoning.budget_tokens" in problems(
        reasoning={"budget_tokens": 2048}, generation_config={"max_output_tokens": 2048}
    )
    too_small = problems(reasoning={"effort": "EFFORT_HIGH"}, generation_config={"max_output_tokens": 8000})
    assert list(too_small) == ["reasoning.effort"] and "16384" in too_small["reasoning.effort"]
    assert problems(reasoning={"effort": "EFFORT_HIGH"}, generation_config={"max_output_tokens": 16385}) == {}


def test_problems_forced_tool_choice_while_thinking_and_gs_images():
    def problems(*messages, **fields):
        return wire.problems(request(chat(*(messages or (user("hi"),)), **fields)))

    thinking = {"reasoning": {"effort": "EFFORT_LOW"}, "tools": [WEATHER]}
    assert list(problems(tool_choice={"mode": "MODE_REQUIRED"}, **thinking)) == ["tool_choice"]
    assert list(problems(tool_choice={"function_name": "get_weather"}, **thinking)) == ["tool_choice"]
    assert problems(tool_choice={"mode": "MODE_NONE"}, **thinking) == {}
    assert problems(tool_choice={"mode": "MODE_REQUIRED"}, tools=[WEATHER]) == {}  # no thinking
    gs = {
        "role": "ROLE_USER",
        "parts": [{"text": "see"}, {"image": {"mime_type": "image/png", "uri": "gs://b/x.png"}}],
    }
    assert list(problems(gs)) == ["messages[0].parts[1].image.uri"]


# --- streamed answers -----------------------------------------------------------------------------


def test_text_answer_finish_usage_and_response_id():
    chunks = translate(an.message_events(["Hel", "lo"], usage=(25, 15), cache_read=100))
    assert [(p.index, p.text) for c in chunks for p in c.parts] == [(0, "Hel"), (0, "lo")]
    assert {c.response_id for c in chunks} == {"msg_stream"}
    last = chunks[-1]
    assert (last.parts, last.finish) == ([], F.FINISH_REASON_STOP)
    # Cached prompt tokens are prompt tokens; read and written counts are both reported.
    assert last.usage == F.Usage(prompt_tokens=125, completion_tokens=15, total_tokens=140,
                                 cached_prompt_tokens=100, cache_write_prompt_tokens=0)  # fmt: skip
    assert [c for c in chunks if c.usage is not None] == [last]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", F.FINISH_REASON_STOP), ("stop_sequence", F.FINISH_REASON_STOP),
     ("max_tokens", F.FINISH_REASON_MAX_TOKENS),
     ("model_context_window_exceeded", F.FINISH_REASON_MAX_TOKENS),
     ("tool_use", F.FINISH_REASON_TOOL_CALLS), ("refusal", F.FINISH_REASON_CONTENT_FILTER),
     ("pause_turn", F.FINISH_REASON_OTHER), ("something_new", F.FINISH_REASON_OTHER)],
)  # fmt: skip
def test_every_stop_reason(stop_reason, finish):
    chunks = translate(an.message_events(["x"], stop_reason=stop_reason))
    assert [c.finish for c in chunks if c.finish] == [finish]


def test_cache_usage_and_cumulative_message_delta_counts():
    usage = an.usage_object(30, 40, cache_read=1000, cache_write=200, thinking=25)
    for cumulative in (False, True):
        chunks = translate(an.answer([an.text_block(0, ["ok"])], usage=usage, cumulative=cumulative))
        assert chunks[-1].usage == F.Usage(prompt_tokens=1230, completion_tokens=40, total_tokens=1270,
                                           reasoning_tokens=25, cached_prompt_tokens=1000,
                                           cache_write_prompt_tokens=200)  # fmt: skip
    # message_delta's counts replace message_start's (server tools can add input tokens).
    t = wire.StreamTranslator()
    t.feed(
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 10, "output_tokens": 1}}}
    )
    t.feed({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"input_tokens": 12, "output_tokens": 9, "cache_read_input_tokens": None}})  # fmt: skip
    usage = t.feed({"type": "message_stop"}).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 9)
    for field in ("cached_prompt_tokens", "cache_write_prompt_tokens", "reasoning_tokens"):
        assert not usage.HasField(field), field
    assert wire.usage_of(None) is None
    # A reported 0 is a count, not an absence.
    zero = wire.usage_of({"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 0})
    assert zero.HasField("cached_prompt_tokens") and zero.cached_prompt_tokens == 0


def test_thinking_and_tool_use_in_one_turn_round_trip_with_the_signature_unchanged():
    signature = "EqQBCkYIBxgCKkB+/sig==" * 4
    events = an.answer(
        [an.thinking_block(0, ["I need ", "the weather."], signature),
         an.tool_use_block(1, "toolu_01", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])],
        stop_reason="tool_use",
    )  # fmt: skip
    chunks = translate(events, include_reasoning=True)
    deltas = [p for c in chunks for p in c.parts]
    assert [(p.index, p.WhichOneof("data")) for p in deltas] == [
        (0, "reasoning"), (0, "reasoning"), (0, "reasoning"),
        (1, "tool_call"), (1, "tool_call"), (1, "tool_call"), (1, "tool_call"),
    ]  # fmt: skip
    assert [p.signature for p in deltas if p.signature] == [signature], "the signature arrives whole, once"
    assert {(p.tool_call.id, p.tool_call.name) for p in deltas[3:]} == {("toolu_01", "get_weather")}
    folder = fold(chunks)
    assert folder.finish == F.FINISH_REASON_TOOL_CALLS
    parts = folder.parts()
    # The next request: the answer as it came, then the tool's result.
    body = body_of(
        user("Weather in Paris?"),
        assistant(parts),
        {"role": "ROLE_TOOL", "parts": [{"tool_result": {"tool_call_id": "toolu_01", "content": "18C"}}]},
        tools=[WEATHER],
        reasoning={"effort": "EFFORT_LOW", "include_reasoning": True},
    )
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I need the weather.", "signature": signature},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
    ]}  # fmt: skip
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"}
    ]


def test_signed_thinking_comes_back_unasked_and_goes_back_unchanged():
    # display "omitted": a signature only. Not asked for, it is returned anyway:
    # the next tool turn must carry it.
    events = an.answer(
        [
            an.thinking_block(0, [], "sig-omitted"),
            an.tool_use_block(1, "toolu_1", "get_time", ['{"city": "東京"}']),
        ],
        stop_reason="tool_use",
    )
    parts = fold(translate(events)).parts()
    assert [p.WhichOneof("data") for p in parts] == ["reasoning", "tool_call"]
    assert (parts[0].reasoning.text, parts[0].signature) == ("", "sig-omitted")
    result = {"tool_result": {"tool_call_id": "toolu_1", "content": "9:00"}}
    body = body_of(user("time?"), assistant(parts), {"role": "ROLE_TOOL", "parts": [result]}, tools=[TIME])
    assert body["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "",
        "signature": "sig-omitted",
    }
    # A server that sends the text anyway: unasked, the block comes out whole, at its end.
    chunks = translate(an.answer([an.thinking_block(0, ["a", "b"], "sig"), an.text_block(1, ["4"])]))
    first = chunks[0].parts[0]
    assert (first.index, first.reasoning.text, first.signature) == (0, "ab", "sig")
    assert [(p.index, p.text) for c in chunks[1:] for p in c.parts] == [(1, "4")]


def test_unsigned_thinking_is_returned_only_when_asked():
    events = an.answer([an.thinking_block(0, ["hmm"], ""), an.text_block(1, ["ok"])])
    assert [(p.index, p.WhichOneof("data")) for p in fold(translate(events)).parts()] == [(0, "text")]
    asked = fold(translate(events, include_reasoning=True)).parts()
    assert [(p.WhichOneof("data"), p.signature) for p in asked] == [("reasoning", ""), ("text", "")]
    # ... and, unsigned, it cannot be sent back.
    assert body_of(user("q"), assistant(asked), user("more"))["messages"][1] == {
        "role": "assistant",
        "content": "ok",
    }


def test_redacted_thinking_round_trip():
    data = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
    events = an.answer([an.redacted_thinking_block(0, data), an.text_block(1, ["Done."])])
    for include_reasoning in (False, True):
        parts = fold(translate(events, include_reasoning=include_reasoning)).parts()
        assert [p.WhichOneof("data") for p in parts] == ["reasoning", "text"]
        assert (parts[0].reasoning.encrypted_content, parts[0].reasoning.text) == (data, "")
    body = body_of(user("q"), assistant(parts), user("next"))
    assert body["messages"][1]["content"] == [
        {"type": "redacted_thinking", "data": data},
        {"type": "text", "text": "Done."},
    ]


def test_tool_use_without_fragments_folds_to_an_empty_object():
    for fragments in ([], [""]):
        events = an.answer([an.tool_use_block(0, "toolu_1", "ping", fragments)], stop_reason="tool_use")
        chunks = translate(events)
        (part,) = fold(chunks).parts()
        assert (part.tool_call.id, part.tool_call.name, part.tool_call.arguments) == ("toolu_1", "ping", "{}")
        assert all(
            p.tool_call.id == "toolu_1" and p.tool_call.name == "ping" for c in chunks for p in c.parts
        )


def test_blocks_that_yield_nothing_take_no_part_index():
    events = an.answer(
        [an.text_block(0, []),  # an empty text block
         an.tool_use_block(1, "toolu_a", "get_weather", ['{"city": "Paris"}']),
         [an.block_start(2, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                             "input": {}}),
          an.block_delta(2, {"type": "input_json_delta", "partial_json": '{"query": "x"}'}),
          an.block_stop(2)],
         [an.block_start(3, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}),
          an.block_stop(3)],
         an.tool_use_block(4, "toolu_b", "get_time", ['{"city": "東京"}'])],
        stop_reason="tool_use",
    )  # fmt: skip
    deltas = [p for c in translate(events) for p in c.parts]
    assert {(p.index, p.tool_call.id) for p in deltas} == {(0, "toolu_a"), (1, "toolu_b")}


def test_deltas_of_two_open_blocks_interleaved_still_fold_by_index():
    # Anthropic streams blocks one after another; the translator keys by block index anyway.
    a, b = an.tool_use_block(1, "toolu_a", "get_weather", ['{"city"', ': "Paris"}']), \
        an.tool_use_block(2, "toolu_b", "get_time", ['{"ci', 'ty": "東京"}'])  # fmt: skip
    events = an.answer([[a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]]], stop_reason="tool_use")
    calls = [p.tool_call for p in fold(translate(events)).parts()]
    assert [(c.id, json.loads(c.arguments)) for c in calls] == [
        ("toolu_a", {"city": "Paris"}), ("toolu_b", {"city": "東京"})]  # fmt: skip


def test_ping_and_unknown_events_are_nothing_and_message_stop_needs_a_stop_reason():
    t = wire.StreamTranslator()
    assert t.feed({"type": "ping"}) is None
    assert t.feed({"type": "some_future_event", "x": 1}) is None
    with pytest.raises(ValueError):
        t.feed({"type": "message_stop"})
    with pytest.raises(KeyError):
        wire.StreamTranslator().feed(
            {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta"}}
        )


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "type", "failure"),
    [(529, "overloaded_error", U.SERVER_ERROR), (500, "api_error", U.SERVER_ERROR),
     (413, "request_too_large", U.CONTEXT_TOO_LONG), (402, "billing_error", U.AUTHENTICATION),
     (400, "invalid_request_error", U.BAD_REQUEST), (504, "timeout_error", U.TIMEOUT),
     # The type decides before the status; an unknown type leaves it to the status.
     (503, "overloaded_error", U.SERVER_ERROR), (429, "new_kind_of_error", U.RATE_LIMITED)],
)  # fmt: skip
def test_error_bodies_are_classified_by_type(status, type, failure):
    body = json.dumps({"type": "error", "error": {"type": type, "message": "nope"}, "request_id": "req_b"})
    error = errors.error_from_response("anthropic", status, {"retry-after": "3"}, body.encode(), ())
    assert error.failure is failure
    assert error.upstream_status == status and error.retry_after_seconds == 3
    assert error.metadata["upstream_request_id"] == "req_b"  # from the body when the header is missing
    assert error.message == f"anthropic: HTTP {status} {type}: nope"
    if status in (529, 500, 503):
        assert error.retryable, "the core's retry layer tries an overloaded Anthropic again"


def test_overloaded_error_event_and_other_stream_errors():
    def event_error(type: str) -> UpstreamError:
        return errors.stream_error(
            "anthropic", {"type": "error", "error": {"type": type, "message": "m"}}, "req_s", ()
        )

    assert event_error("overloaded_error").failure is U.SERVER_ERROR
    assert event_error("rate_limit_error").failure is U.RATE_LIMITED
    assert event_error("invalid_request_error").failure is U.BAD_REQUEST
    assert event_error("brand_new_error").failure is U.SERVER_ERROR
    assert event_error("overloaded_error").metadata["upstream_request_id"] == "req_s"
    assert event_error("overloaded_error").upstream_status is None


def test_a_200_error_body_is_classified_and_other_bodies_are_malformed_or_quoted():
    overloaded = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    error = errors.error_from_response(
        "a", 200, {"content-type": "application/json"}, overloaded.encode(), ()
    )
    assert error.failure is U.SERVER_ERROR
    html = errors.error_from_response("a", 200, {"content-type": "text/html"}, b"<html>", ())
    assert html.failure is U.MALFORMED_RESPONSE
    raw = errors.error_from_response("a", 502, {}, f"bad gateway {KEY}".encode(), (KEY,))
    assert raw.failure is U.SERVER_ERROR and "bad gateway" in raw.message and KEY not in raw.message


# --- over HTTP ------------------------------------------------------------------------------------


async def _provider(fake: FakeServer, **options) -> AnthropicProvider:
    provider = AnthropicProvider("anthropic", base_url=fake.base_url, api_key=KEY, max_retries=0, **options)
    await provider.start()
    return provider


async def _answer(provider: AnthropicProvider, r: ProviderRequest) -> Folder:
    folder = Folder()
    try:
        async with asyncio.timeout(10), provider.stream(r) as chunks:
            async for chunk in chunks:
                folder.add(chunk)
    finally:
        await provider.close()
    return folder


async def test_x_api_key_and_anthropic_version_are_sent_never_the_environment_key(fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key-must-not-be-used")
    fake.script(an.stream(an.message_events(["ok"])))
    folder = await _answer(await _provider(fake), request())
    assert folder.text() == "ok"
    sent = fake.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == API_VERSION == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json()["stream"] is True


async def test_a_configured_anthropic_version_is_sent_once_instead(fake):
    fake.script(an.stream(an.message_events(["ok"])))
    await _answer(await _provider(fake, default_headers={"Anthropic-Version": "2026-10-21"}), request())
    assert fake.requests[0].headers["anthropic-version"] == "2026-10-21"
    provider = AnthropicProvider("anthropic", base_url="http://127.0.0.1:1", api_key="")
    assert provider.auth_headers("") == {"anthropic-version": API_VERSION}


async def test_a_character_split_across_network_writes(fake):
    data = b"".join(an.message_events(["你好", "世界"]))
    fake.script(an.stream(split_inside(data, "世"), pause=0.05))
    assert (await _answer(await _provider(fake), request())).text() == "你好世界"


async def test_a_complete_body_without_message_stop_is_interrupted(fake):
    fake.script(an.stream(an.message_events(["one"])[:-1]))
    with pytest.raises(UpstreamError) as caught:
        await _answer(await _provider(fake), request())
    assert caught.value.failure is U.STREAM_INTERRUPTED
    assert caught.value.metadata["upstream_request_id"] == "req_stream"


@pytest.mark.parametrize("retry_after", ["30", "http-date"])
async def test_429_retry_after_and_the_request_id_header(fake, retry_after):
    header = email.utils.formatdate(time.time() + 30, usegmt=True) if retry_after == "http-date" else "30"
    fake.script(
        an.error(429, "rate_limit_error", "Number of requests exceeded", headers={"retry-after": header})
    )
    with pytest.raises(UpstreamError) as caught:
        await _answer(await _provider(fake), request())
    error = caught.value
    assert error.failure is U.RATE_LIMITED and abs(error.retry_after_seconds - 30) <= 2
    assert error.metadata["upstream_request_id"] == "req_429"


async def test_a_rate_limit_error_event_mid_stream(fake):
    fake.script(an.stream([*an.message_events(["partial"])[:4], an.error_event("rate_limit_error", "later")]))
    got: list[str] = []
    provider = await _provider(fake)
    with pytest.raises(UpstreamError) as caught:
        try:
            async with provider.stream(request()) as chunks:
                async for chunk in chunks:
                    got += [p.text for p in chunk.parts]
        finally:
            await provider.close()
    assert got == ["partial"] and caught.value.failure is U.RATE_LIMITED


def test_ready_needs_a_key_unless_keyless():
    def make(**options) -> AnthropicProvider:
        return AnthropicProvider("anthropic", base_url="http://127.0.0.1:1", **options)

    assert make(api_key="k").ready()
    assert not make(api_key="").ready()
    assert make(api_key="", requires_key=False).ready()
    assert make(api_key="").not_ready_hint() == "set its API key"
