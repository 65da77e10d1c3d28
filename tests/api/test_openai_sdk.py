"""The official openai Python SDK against a real aiosd: every kind of answer parses, every error maps to its class."""

from __future__ import annotations

import json

import openai
import pytest
from openai import AsyncOpenAI

from tests.support.endpoint import MODEL_CALLS, TOOLS, stack
from tests.support.fake_kernel import (
    Empty,
    Hang,
    LLMFailure,
    ServerError,
    Text,
    TooSlow,
    Unreachable,
)

USER = [{"role": "user", "content": "hello"}]


def sdk(s, **options) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=s.aiosd.base_url, api_key="any-key-will-do", max_retries=0, **options)


@pytest.mark.parametrize("reply,expected", [(Text("Hi there"), "Hi there"), (Empty(), "")], ids=["text", "none"])
async def test_sdk_parses_a_whole_answer(tmp_path, reply, expected):
    async with stack(tmp_path) as s:
        s.kernel.script(reply)
        async with sdk(s) as client:
            raw = await client.chat.completions.with_raw_response.create(model="mock-model", messages=USER)
    completion = raw.parse()
    assert raw.headers["x-aiosd-usage"] == "estimated" and raw.headers["x-request-id"]
    assert completion.object == "chat.completion" and completion.model == "mock-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


async def test_sdk_parses_a_stream_with_usage(tmp_path):
    async with stack(tmp_path) as s:
        s.kernel.script(Text("streamed words"))
        async with sdk(s) as client:
            stream = await client.chat.completions.create(model="mock-model", messages=USER, stream=True)
            chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed words"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1


async def test_sdk_parses_tool_calls_whole_and_streamed(tmp_path):
    async with stack(tmp_path) as s:
        s.kernel.script(Text(MODEL_CALLS), Text(MODEL_CALLS))
        async with sdk(s) as client:
            whole = await client.chat.completions.create(model="mock-model", messages=USER, tools=TOOLS)
            stream = await client.chat.completions.create(model="mock-model", messages=USER, tools=TOOLS, stream=True)
            chunks = [chunk async for chunk in stream]
    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls"
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("function", "read", {"path": "a <b> & c.txt", "limit": 20}), ("function", "ls", {})]

    streamed: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                entry = streamed.setdefault(delta.index, {"name": delta.function.name, "arguments": ""})
                entry["arguments"] += delta.function.arguments or ""
    assert [(v["name"], json.loads(v["arguments"])) for _, v in sorted(streamed.items())] == [
        ("read", {"path": "a <b> & c.txt", "limit": 20}), ("ls", {})]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


async def test_sdk_lists_the_models(tmp_path):
    async with stack(tmp_path) as s, sdk(s) as client:
        page = await client.models.list()
    assert sorted(m.id for m in page.data) == ["mock-model", "sonnet"]


# (fake kernel item or None for an unknown model, the SDK's exception class, HTTP status)
SDK_ERRORS = {
    "unknown-model": (None, openai.NotFoundError, 404),
    "llm-400": (LLMFailure(400), openai.BadRequestError, 400),
    "rate-limit": (LLMFailure(429), openai.RateLimitError, 429),
    "kernel-500": (ServerError(), openai.InternalServerError, 502),
    "llm-unreachable": (Unreachable(), openai.InternalServerError, 503),
    "llm-too-slow": (TooSlow(), openai.InternalServerError, 504),
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("case", list(SDK_ERRORS))
async def test_sdk_raises_the_matching_exception(tmp_path, case, stream):
    item, exception, status = SDK_ERRORS[case]
    async with stack(tmp_path, "retry: {max_retries: 0}") as s:
        if item is not None:
            s.kernel.script(item)
        async with sdk(s) as client:
            with pytest.raises(exception) as caught:
                await client.chat.completions.create(
                    model="mock-model" if item is not None else "no-such-model", messages=USER, stream=stream
                )
    assert caught.value.status_code == status
    assert caught.value.body["message"] and caught.value.body["type"]
    assert caught.value.response.headers["x-request-id"]


async def test_sdk_raises_authentication_error_without_the_key(tmp_path):
    async with stack(tmp_path, 'auth: {keys: ["right-key-123"]}') as s:
        async with sdk(s) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="mock-model", messages=USER)
        async with AsyncOpenAI(base_url=s.aiosd.base_url, api_key="right-key-123", max_retries=0) as client:
            completion = await client.chat.completions.create(model="mock-model", messages=USER)
    assert caught.value.status_code == 401
    assert completion.choices[0].message.content == "echo: hello"


async def test_sdk_times_out_on_a_hang_as_a_gateway_timeout(tmp_path):
    hang = Hang()
    async with stack(tmp_path, 'kernel: {timeout: "200ms"}') as s:
        s.kernel.script(hang)
        async with sdk(s) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(model="mock-model", messages=USER, stream=True)
        hang.release()
    assert caught.value.status_code == 504
