"""Parsing OpenClaw's requests: everything it sends is accepted, anything malformed is a 400 naming the field."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosd.errors import InvalidRequest
from aiosd.translate.chat_request import (
    AssistantMessage,
    ChatRequest,
    DeveloperMessage,
    ImagePart,
    TextPart,
    ToolMessage,
    UserMessage,
    parse_chat_request,
    text_of,
)
from tests.support.chat_fixtures import body, recorded_body, recorded_requests

RECORDED = recorded_requests()


@pytest.mark.parametrize(("name", "raw"), RECORDED, ids=[name for name, _ in RECORDED])
def test_every_recorded_openclaw_request_parses(name, raw):
    request = parse_chat_request(raw)
    sent = json.loads(raw)
    assert request.model == sent["model"]
    assert len(request.messages) == len(sent["messages"])
    assert [t.function.name for t in request.tools] == [t["function"]["name"] for t in sent["tools"]]
    assert request.is_stream is True
    assert request.include_usage is True
    assert request.max_output_tokens == 4096
    assert request.tool_choice_mode == "auto"
    assert request.offers_tools


def test_round_trip_fixture_keeps_tool_call_history():
    request = parse_chat_request(json.dumps(recorded_body("chat-completions-tool-roundtrip", 1)).encode())
    assistant, tool, context = request.messages[2], request.messages[3], request.messages[4]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.content is None
    assert assistant.tool_calls[0].function.name == "read"
    assert json.loads(assistant.tool_calls[0].function.arguments) == {"path": "MOCK_README.txt"}
    assert isinstance(tool, ToolMessage) and tool.tool_call_id == "calla4f6d485f4e2"
    assert isinstance(context, UserMessage) and isinstance(context.content[0], TextPart)
    assert "OPENCLAW_INTERNAL_CONTEXT" in text_of(context.content)


def test_legacy_max_tokens_is_used_when_max_completion_tokens_is_absent():
    assert parse_chat_request(body([{"role": "user", "content": "hi"}], max_tokens=77)).max_output_tokens == 77
    both = body([{"role": "user", "content": "hi"}], max_tokens=77, max_completion_tokens=99)
    assert parse_chat_request(both).max_output_tokens == 99


def test_unknown_fields_are_ignored_everywhere():
    raw = body(
        [
            {"role": "system", "content": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "hi", "some_future_field": [1, 2]},
        ],
        tools=[{"type": "function", "function": {"name": "ls", "parameters": {}, "x-extra": 1}, "extra": True}],
        reasoning_effort="high",
        store=False,
        metadata={"a": "b"},
    )
    request = parse_chat_request(raw)
    assert text_of(request.messages[0].content) == "sys"
    assert request.tools[0].function.name == "ls"


def test_all_openai_roles_and_content_shapes_are_accepted():
    raw = body(
        [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call1", "content": [{"type": "text", "text": "a.txt"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "assistant"},
        ],
        stream=None,
        temperature=0,
        stream_options=None,
    )
    request = parse_chat_request(raw)
    assert isinstance(request.messages[0], DeveloperMessage)
    assert isinstance(request.messages[1].content[1], ImagePart)
    assert request.messages[1].content[1].image_url.detail == "low"
    assert text_of(request.messages[3].content) == "a.txt"
    assert text_of(request.messages[4].content) == "no"
    assert request.temperature == 0.0
    assert not request.is_stream and not request.include_usage


def test_tool_choice_variants():
    tools = [{"type": "function", "function": {"name": "read"}}]
    msgs = [{"role": "user", "content": "hi"}]
    named = parse_chat_request(body(msgs, tools=tools, tool_choice={"type": "function", "function": {"name": "read"}}))
    assert named.tool_choice_mode == "required" and named.forced_tool == "read"
    none = parse_chat_request(body(msgs, tools=tools, tool_choice="none"))
    assert none.tool_choice_mode == "none" and not none.offers_tools
    assert parse_chat_request(body(msgs, tools=tools)).tool_choice_mode == "auto"
    assert not parse_chat_request(body(msgs)).offers_tools


@pytest.mark.parametrize(
    ("raw", "mentions"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "expected object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (body([]), "messages"),
        (body([{"role": "user", "content": 1}]), "messages[0].content"),
        (body([{"role": "system", "content": "s"}, {"role": "user"}]), "messages[1]"),
        (body([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]), "tool_call_id"),
        (body([{"role": "function", "content": "x"}]), "messages[0].role"),
        (body([{"content": "x"}]), "role"),
        (body([{"role": "user", "content": [{"type": "audio", "x": 1}]}]), "messages[0].content[0].type"),
        (body([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]),
         "messages[0].content[0].type"),
        (body([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "x", "arguments": {}}}]}]),
         "messages[0].tool_calls[0].function.arguments"),
        (body([{"role": "user", "content": "x"}], max_tokens=True), "max_tokens"),
        (body([{"role": "user", "content": "x"}], stream="yes"), "stream"),
        (body([{"role": "user", "content": "x"}], tools=[{"type": "function", "function": {"name": ""}}]),
         "tools[0].function"),
        (body([{"role": "user", "content": "x"}], tools={"name": "x"}), "tools"),
        (body([{"role": "user", "content": "x"}], tool_choice="always"), "tool_choice"),
        (body([{"role": "user", "content": "x"}], tool_choice="required"), "tool_choice"),
        (body([{"role": "user", "content": "x"}], tools=[{"type": "function", "function": {"name": "a"}}],
              tool_choice={"type": "function", "function": {"name": "b"}}), "tool_choice.function.name"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"function": '
         + b"[" * 5000 + b"]" * 5000 + b"}]}",
         "tools[0].function"),
    ],
)
def test_invalid_requests_name_the_field(raw, mentions):
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(raw)
    assert mentions in caught.value.message
    assert caught.value.status == 400


def test_deeply_nested_json_is_a_400_not_a_crash():
    raw = (
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}], '
        b'"tools": [{"function": {"name": "x", "parameters": {"a": '
        + b"[" * 100_000 + b"]" * 100_000 + b"}}}]}"
    )
    with pytest.raises(InvalidRequest):
        parse_chat_request(raw)


def test_lone_surrogate_from_a_cut_emoji_is_repaired_not_refused():
    # OpenClaw caps tool output by bytes; JSON.stringify writes half an emoji as a lone escape.
    raw = (
        b'{"model": "m", "messages": [{"role": "tool", "tool_call_id": "c", "content": "ok \\ud83d"}, '
        b'{"role": "user", "content": "\\ud83d\\ude00"}]}'
    )
    request = parse_chat_request(raw)
    assert request.messages[0].content == "ok \ufffd"
    assert request.messages[1].content == "\U0001f600"


def test_parsing_a_60kb_openclaw_request_takes_well_under_a_millisecond():
    raw = RECORDED[-1][1]
    assert len(raw) > 60_000
    parse_chat_request(raw)
    runs = 200
    started = time.perf_counter()
    for _ in range(runs):
        parse_chat_request(raw)
    per_request = (time.perf_counter() - started) / runs
    assert per_request < 0.0005, f"{per_request * 1e6:.0f} us per request"


# --- fuzzing: wrong input of any shape is an InvalidRequest, never another exception -----------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
VALID = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "t"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "read", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "r"},
    ],
    "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_completion_tokens": 10,
}


def _parse_outcome(raw: bytes) -> ChatRequest | None:
    try:
        return parse_chat_request(raw)
    except InvalidRequest as exc:
        assert exc.message
        return None


@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(raw):
    _parse_outcome(raw)


@given(json_values)
def test_fuzz_arbitrary_json(value):
    _parse_outcome(json.dumps(value).encode())


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


VALID_PATHS = [p for p in _paths(VALID) if p]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_PATHS), json_values)
def test_fuzz_one_field_of_a_valid_request_replaced(path, replacement):
    document = json.loads(json.dumps(VALID))
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    request = _parse_outcome(json.dumps(document).encode())
    if request is not None:  # whatever got through is typed as promised
        assert isinstance(request.model, str) and request.model
        assert request.messages


@pytest.mark.parametrize("where", ["user", "tool_name"])
def test_text_that_is_not_utf8_anywhere_is_a_400_on_every_msgspec_version(where):
    """msgspec before 0.19 (the floor) raises UnicodeDecodeError, not DecodeError, for such a string:
    it must still be the client's error with the same words, never a 500."""
    bad = b'"caf\xc3"'
    if where == "user":
        raw = b'{"model": "m", "messages": [{"role": "user", "content": ' + bad + b'}]}'
    else:
        raw = (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", '
               b'"function": {"name": ' + bad + b', "parameters": {}}}]}')
    with pytest.raises(InvalidRequest, match=r"^Invalid request: body is not valid JSON \(Invalid UTF-8"):
        parse_chat_request(raw)
