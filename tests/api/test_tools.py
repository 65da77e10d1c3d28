"""Tool round trips through a real aiosd and the fake kernel, in prompt and native mode."""

from __future__ import annotations

import json

import pytest

from tests.support.endpoint import (
    MODEL_CALLS,
    TOOLS,
    assert_openai_error,
    read_sse,
    stack,
)
from tests.support.fake_kernel import Text, ToolCall, ToolCalls


async def _ask(client, messages, *, stream: bool, model: str = "mock-model", tools=TOOLS):
    return await client.post(
        "/chat/completions",
        json={"model": model, "messages": messages, "tools": tools, "tool_choice": "auto", "stream": stream},
    )


def _answer(response, stream: bool) -> tuple[str | None, list[dict], str]:
    """(content, calls as {"id","name","arguments"}, finish_reason) from either response form."""
    assert response.status_code == 200, response.text[:500]
    if stream:
        sse = read_sse(response.text)
        [finish] = sse.finish_reasons
        return sse.content, sse.tool_calls, finish
    choice = response.json()["choices"][0]
    calls = [{"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
             for c in choice["message"].get("tool_calls") or ()]
    assert all(c["type"] == "function" for c in choice["message"].get("tool_calls") or ())
    return choice["message"]["content"], calls, choice["finish_reason"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_prompt_mode_round_trip(tmp_path, stream):
    user = {"role": "user", "content": "what is in a.txt?"}
    async with stack(tmp_path) as s:
        s.kernel.script(Text(MODEL_CALLS), Text("a.txt says hi"))
        first = await _ask(s.client, [user], stream=stream)
        content, calls, finish = _answer(first, stream)

        assert finish == "tool_calls"
        assert content.strip() == "Let me look."
        assert [c["name"] for c in calls] == ["read", "ls"]
        # Arguments converted to the schema's types, always valid JSON, "{}" when empty.
        assert json.loads(calls[0]["arguments"]) == {"path": "a <b> & c.txt", "limit": 20}
        assert calls[1]["arguments"] == "{}"
        assert len({c["id"] for c in calls}) == 2

        # The kernel got no native tools; the model was told about them in the system prompt.
        sent = s.query_data(0)
        assert sent["tools"] == []
        assert sent["messages"][0]["role"] == "system" and '<tool name="read">' in sent["messages"][0]["content"]

        # OpenClaw replays the calls (ids stripped of punctuation) with their results.
        history = [
            user,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": c["id"].replace("_", ""), "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]},
            {"role": "tool", "tool_call_id": calls[0]["id"].replace("_", ""), "content": "hi <there>"},
            {"role": "tool", "tool_call_id": calls[1]["id"].replace("_", ""), "content": "a.txt\nb.txt"},
        ]
        second = await _ask(s.client, history, stream=stream)
        content, calls_after, finish = _answer(second, stream)

    assert (content, calls_after, finish) == ("a.txt says hi", [], "stop")
    messages = s.query_data(1)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert all("tool_calls" not in m for m in messages)
    call_text, result_text = messages[2]["content"], messages[3]["content"]
    assert '<invoke name="read">' in call_text and "a <b> & c.txt" in call_text and '<invoke name="ls"' in call_text
    assert result_text.startswith("<function_results>")
    assert '<result name="read">' in result_text and "hi <there>" in result_text
    assert '<result name="ls">' in result_text and "a.txt\nb.txt" in result_text


async def test_prompt_mode_malformed_call_text_comes_back_as_text(tmp_path):
    broken = 'I would use <function_calls> like <invoke name="read"> but I will not.'
    async with stack(tmp_path) as s:
        s.kernel.script(Text(broken))
        response = await _ask(s.client, [{"role": "user", "content": "x"}], stream=False)
    content, calls, finish = _answer(response, False)
    assert calls == [] and finish in ("stop", "length")
    assert "I would use" in content


NATIVE_YAML = """
models:
  map:
    native-model: {kernel_model: "gpt-4o-mini", backend: "openai", tools: native}
    native-strict: {kernel_model: "gpt-4o-mini", backend: "openai", tools: native, on_text_dropped: error}
"""

NATIVE_TOOLS = [
    {"type": "function", "function": {"name": "github__create_issue", "description": "File an issue.",
                                      "parameters": {"type": "object", "properties": {"title": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "fs/read", "description": "Read a file.",
                                      "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}},
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_native_mode_round_trip_maps_names_back(tmp_path, stream):
    user = {"role": "user", "content": "file it"}
    async with stack(tmp_path, NATIVE_YAML) as s:
        s.kernel.script(
            ToolCalls([ToolCall("github__create_issue", '{"title": "bug"}', "call_1"),
                       ToolCall("fs__read", '{"path": "a"}', "call_2")]),
            # A text answer with tools present is dropped by the kernel; aiosd asks again without tools.
            Text("filed"),
            Text("filed"),
        )
        first = await _ask(s.client, [user], stream=stream, model="native-model", tools=NATIVE_TOOLS)
        content, calls, finish = _answer(first, stream)
        assert finish == "tool_calls"
        # The kernel turned every "__" into "/": aiosd maps both back to the names it offered.
        assert [c["name"] for c in calls] == ["github__create_issue", "fs/read"]
        assert [json.loads(c["arguments"]) for c in calls] == [{"title": "bug"}, {"path": "a"}]
        assert s.kernel.queries[0]["query_data"]["tools"][1]["function"]["name"] == "fs/read"
        assert s.kernel.llm_requests[0].tools[1]["function"]["name"] == "fs__read"

        history = [
            user,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls]},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "issue #7"},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "contents"},
        ]
        second = await _ask(s.client, history, stream=stream, model="native-model", tools=NATIVE_TOOLS)
        content, calls_after, finish = _answer(second, stream)
    assert (content, calls_after, finish) == ("filed", [], "stop")
    assert second.headers["x-aiosd-attempts"] == "2"
    messages = s.query_data(1)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == ["github__create_issue", "fs__read"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_native_text_dropped_is_asked_again_without_tools(tmp_path, stream):
    async with stack(tmp_path, NATIVE_YAML) as s:
        # With tools present the kernel drops a text answer; the second ask carries no tools.
        s.kernel.script(Text("the answer"), Text("the answer"))
        response = await _ask(s.client, [{"role": "user", "content": "q"}], stream=stream, model="native-model",
                              tools=NATIVE_TOOLS)
        content, calls, finish = _answer(response, stream)
    assert (content, calls, finish) == ("the answer", [], "stop")
    assert response.headers["x-aiosd-attempts"] == "2"
    assert s.kernel.queries[0]["query_data"]["tools"] and s.kernel.queries[1]["query_data"]["tools"] == []


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_native_text_dropped_with_policy_error_is_a_502_that_explains(tmp_path, stream):
    async with stack(tmp_path, NATIVE_YAML) as s:
        s.kernel.script(Text("the answer"))
        response = await _ask(s.client, [{"role": "user", "content": "q"}], stream=stream, model="native-strict",
                              tools=NATIVE_TOOLS)
    error = assert_openai_error(response, 502, "kernel_dropped_text")
    assert "tools: prompt" in error["message"] and "native-strict" in error["message"]
    assert s.kernel.query_count == 1
