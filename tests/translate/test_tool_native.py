"""Native mode: tools passed to the kernel OpenAI-shaped, its tool calls mapped back, dropped text detected."""

from __future__ import annotations

import json

import msgspec
import pytest

from aiosd.errors import KernelBadAnswer, KernelTextDropped
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.tool_native import (
    decode_native_answer,
    history_native,
    kernel_tools,
)
from tests.support.chat_fixtures import body, openclaw_tools


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def tools_of(*names):
    return parse_chat_request(
        body([{"role": "user", "content": "x"}], tools=[{"type": "function", "function": {"name": n}} for n in names])
    ).tools


def test_tools_are_sent_openai_shaped_never_flat():
    tools = parse_chat_request(body([{"role": "user", "content": "x"}], tools=openclaw_tools())).tools
    sent, _ = kernel_tools(tools)
    assert sent == openclaw_tools()  # OpenClaw's tools already are OpenAI-shaped: passed as they are
    assert all(set(t) == {"type", "function"} for t in sent)


def test_a_tool_without_parameters_gets_an_empty_object_schema():
    sent, _ = kernel_tools(tools_of("ls"))
    assert sent == [
        {"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}}
    ]


@pytest.mark.parametrize(
    ("offered", "returned", "expected"),
    [
        ("github__create_issue", "github/create_issue", "github__create_issue"),  # kernel turned __ into /
        ("github/create_issue", "github/create_issue", "github/create_issue"),
        ("a__b__c", "a/b/c", "a__b__c"),
        ("read", "read", "read"),
    ],
)
def test_returned_names_map_back_to_the_offered_names(offered, returned, expected):
    _, names = kernel_tools(tools_of(offered, "other"))
    reply = decode_native_answer(None, [{"name": returned, "parameters": {}, "id": "call_1"}], names, model_id="m")
    assert reply.tool_calls[0].name == expected


def test_a_name_that_was_not_offered_comes_back_as_the_kernel_says():
    _, names = kernel_tools(tools_of("read"))
    reply = decode_native_answer(None, [{"name": "made/up", "parameters": {}}], names, model_id="m")
    assert reply.tool_calls[0].name == "made/up"


def test_kernel_tool_calls_become_openai_tool_calls():
    raw = [
        {"name": "read", "parameters": {"path": "a.txt", "n": 1.5, "ü": "ß"}, "id": "call_abc"},
        {"name": "ls", "parameters": {}, "id": "call_def"},
        {"name": "ls", "parameters": None},
    ]
    reply = decode_native_answer(None, raw, {}, model_id="m")
    assert reply.finish_reason == "tool_calls" and reply.content is None
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in reply.tool_calls[:2]] == [
        ("call_abc", "read", {"path": "a.txt", "n": 1.5, "ü": "ß"}),
        ("call_def", "ls", {}),
    ]
    assert reply.tool_calls[1].arguments_json == "{}"
    assert reply.tool_calls[2].arguments_json == "{}"
    assert reply.tool_calls[2].id.startswith("call_")


def test_the_text_dropped_answer_raises_with_a_configuration_hint():
    with pytest.raises(KernelTextDropped) as caught:
        decode_native_answer(None, [], {}, model_id="sonnet")
    message = caught.value.message
    assert "tools: prompt" in message and "on_text_dropped" in message and "sonnet" in message
    assert caught.value.status == 502
    assert isinstance(caught.value, KernelBadAnswer)


def test_text_without_calls_is_a_text_answer():
    reply = decode_native_answer("Hi", [], {}, model_id="m")
    assert reply.content == "Hi" and reply.finish_reason == "stop" and reply.tool_calls == []


@pytest.mark.parametrize(
    "raw_calls",
    ["nope", [{"parameters": {}}], [{"name": "ls", "parameters": [1]}], [{"name": "ls", "parameters": "not json"}],
     [{"name": "ls", "parameters": {"x": float("nan")}}],
     # Nested deeper than json can follow, as a string to decode and as a value to encode.
     [{"name": "ls", "parameters": "[" * 100_000 + "]" * 100_000}],
     [{"name": "ls", "parameters": {"x": _nested(5000)}}]],
    ids=["not_a_list", "no_name", "list_arguments", "not_json", "nan", "deep_string", "deep_value"],
)
def test_kernel_answers_that_are_not_tool_calls_are_bad_answers(raw_calls):
    with pytest.raises(KernelBadAnswer):
        decode_native_answer(None, raw_calls, {}, model_id="m")


def test_history_is_passed_natively_with_llm_side_names():
    req = parse_chat_request(
        body(
            [
                {"role": "developer", "content": "sys"},
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "callx1", "type": "function",
                     "function": {"name": "github/create_issue", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "callx1", "content": [{"type": "text", "text": "done"}]},
            ]
        )
    )
    # As the kernel reads them (the system prompt goes as the client's own JSON, a msgspec.Raw).
    assert msgspec.json.decode(msgspec.json.encode(history_native(req))) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "callx1", "type": "function", "function": {"name": "github__create_issue", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "callx1", "content": "done"},
    ]
