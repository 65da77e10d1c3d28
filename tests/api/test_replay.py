"""OpenClaw's recorded chat-completions requests replayed through a real aiosd to the fake kernel."""

from __future__ import annotations

import json

import pytest

from tests.support.chat_fixtures import recorded_requests
from tests.support.endpoint import chat, read_sse, stack

RECORDED = recorded_requests()


def _roles(messages: list[dict]) -> list[str]:
    return [m["role"] for m in messages]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("name,body", RECORDED, ids=[name for name, _ in RECORDED])
async def test_recorded_request_reaches_the_kernel_and_the_answer_comes_back(tmp_path, name, body, stream):
    request = json.loads(body)
    request["stream"] = stream
    async with stack(tmp_path) as s:
        s.kernel.script("The README says hello.")
        response = await s.client.post("/chat/completions", json=request, headers={"authorization": "Bearer mock-key"})

    assert response.status_code == 200, response.text[:500]
    assert response.headers["x-aiosd-attempts"] == "1"
    assert response.headers["x-aiosd-usage"] == "estimated"
    usage = _answer_usage(response, stream)
    # OpenClaw's 50 KB system prompt alone is over 12,000 tokens at 4 bytes per token.
    assert usage["prompt_tokens"] > 12_000
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    [query] = s.kernel.queries
    assert query["agent_name"] == "openclaw" and query["query_type"] == "llm"
    _check_prompt_mode_query(query["query_data"], request)


def _answer_usage(response, stream: bool) -> dict:
    """The answer is the scripted text, finished with "stop"; returns its usage."""
    if stream:
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = read_sse(response.text)
        assert sse.content == "The README says hello."
        assert sse.finish_reasons == ["stop"]
        return sse.usage
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "mock-model"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "The README says hello."}
    assert completion["choices"][0]["finish_reason"] == "stop"
    return completion["usage"]


def _check_prompt_mode_query(data: dict, request: dict) -> None:
    """Prompt mode (the default): no tools to the kernel, no tool role, calls and results as text."""
    assert data["llms"] == [{"name": "gpt-4o-mini", "backend": "openai"}]
    assert data["tools"] == []
    roles = _roles(data["messages"])
    assert "tool" not in roles
    assert roles[0] == "system"
    assert not any(m.get("tool_calls") for m in data["messages"])
    system = data["messages"][0]["content"]
    assert system.startswith(request["messages"][0]["content"][:1000])
    assert "<function_calls>" in system
    for tool in request["tools"]:
        assert f'<tool name="{tool["function"]["name"]}">' in system
    # What the user said reaches the model word for word.
    first_user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    assert first_user in [m["content"] for m in data["messages"]]
    if any(m["role"] == "tool" for m in request["messages"]):
        [call, result] = [m for m in data["messages"][1:]
                          if m["role"] == "assistant" or "<function_results>" in str(m["content"])]
        assert call["role"] == "assistant" and '<invoke name="read">' in call["content"]
        assert '<parameter name="path">MOCK_README.txt</parameter>' in call["content"]
        assert "hello from MOCK_README" in result["content"]


async def test_usage_is_sent_even_when_the_stream_does_not_ask_for_it(tmp_path):
    async with stack(tmp_path) as s:
        response = await s.client.post("/chat/completions", json=chat("hi", stream=True))
    sse = read_sse(response.text)
    assert sse.usage is not None and sse.usage["completion_tokens"] >= 1
    assert response.headers["x-aiosd-usage"] == "estimated"
    # The usage chunk is the last before [DONE], with no choices, as OpenAI sends it.
    assert sse.chunks[-1]["choices"] == [] and sse.chunks[-1]["usage"] == sse.usage


async def test_sse_frames_are_exactly_what_the_openai_stream_format_says(tmp_path):
    async with stack(tmp_path) as s:
        response = await s.client.post("/chat/completions", json=chat("frames", stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    sse = read_sse(response.text)
    first, *middle, finish, usage = sse.chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in middle] == [{"content": "echo: frames"}]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *middle])
    assert usage["choices"] == []
    assert sse.chunks[0]["id"].startswith("chatcmpl-")


async def test_developer_role_and_content_parts_are_accepted(tmp_path):
    request = {
        "model": "mock-model",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        ],
        "max_tokens": 50,
    }
    async with stack(tmp_path) as s:
        response = await s.client.post("/chat/completions", json=request)
    assert response.status_code == 200, response.text
    assert "part one" in response.json()["choices"][0]["message"]["content"]
    sent = s.query_data()["messages"]
    assert "Be brief." in json.dumps(sent)
