"""OpenAI output: bodies and SSE frames the OpenAI SDK accepts, and honest usage estimates."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aiosd.api.responses import (
    DONE_FRAME,
    Usage,
    completion_body,
    error_body,
    estimate_usage,
    sse_stream,
)
from aiosd.errors import InvalidRequest, KernelTextDropped
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.query import build_kernel_call
from aiosd.translate.reply import Reply, ToolCall
from tests.support.chat_fixtures import body, model, recorded_requests

IDS = {"model_id": "sonnet", "completion_id": "chatcmpl-abc", "created": 1_700_000_000}
USAGE = Usage(100, 20, 120)
TEXT = Reply(content="Hello <there> & \"you\"\n")
CALLS = Reply(
    content="Let me look.",
    tool_calls=[ToolCall("call_1", "read", '{"path":"a.txt"}'), ToolCall("call_2", "ls", "{}")],
    finish_reason="tool_calls",
)


def read_stream(frames: list[bytes]):
    """What OpenClaw gets out of the frames: chunks, joined content, calls by index, finish, usage."""
    assert frames[-1] == DONE_FRAME
    chunks = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n") and b"\n" not in frame[:-2]
        chunks.append(ChatCompletionChunk.model_validate_json(frame[6:]))
    content, calls, finish, usage = "", {}, [], None
    for chunk in chunks:
        assert (chunk.id, chunk.object, chunk.created, chunk.model) == (
            "chatcmpl-abc", "chat.completion.chunk", 1_700_000_000, "sonnet")
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            if choice.finish_reason:
                finish.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or ():
                if delta.index not in calls:
                    assert delta.id and delta.type == "function" and delta.function.name  # all in the first delta
                    calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
                calls[delta.index]["arguments"] += delta.function.arguments or ""
    return chunks, content, [calls[i] for i in sorted(calls)], finish, usage


def test_text_completion_body():
    parsed = ChatCompletion.model_validate_json(completion_body(TEXT, usage=USAGE, **IDS))
    assert parsed.id == "chatcmpl-abc" and parsed.object == "chat.completion" and parsed.model == "sonnet"
    assert parsed.choices[0].message.content == TEXT.content
    assert parsed.choices[0].message.tool_calls is None
    assert parsed.choices[0].finish_reason == "stop"
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens, parsed.usage.total_tokens) == (100, 20, 120)


def test_tool_call_completion_body():
    reply = Reply(content=None, tool_calls=CALLS.tool_calls, finish_reason="tool_calls")
    raw = completion_body(reply, usage=USAGE, **IDS)
    parsed = ChatCompletion.model_validate_json(raw)
    message = parsed.choices[0].message
    assert json.loads(raw)["choices"][0]["message"]["content"] is None
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_1", "function", "read", '{"path":"a.txt"}'), ("call_2", "function", "ls", "{}")]
    assert parsed.choices[0].finish_reason == "tool_calls"


def test_an_empty_answer_has_empty_string_content():
    assert json.loads(completion_body(Reply(content=None), usage=None, **IDS))["choices"][0]["message"]["content"] == ""


def test_body_is_compact_and_byte_exact():
    assert completion_body(Reply(content="hi"), usage=Usage(1, 1, 2), **IDS) == (
        b'{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"sonnet","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"hi"},"logprobs":null,"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    )


def test_text_stream():
    frames = sse_stream(TEXT, usage=USAGE, **IDS)
    chunks, content, calls, finish, usage = read_stream(frames)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert content == TEXT.content and calls == [] and finish == ["stop"]
    assert chunks[-1].choices == [] and usage.total_tokens == 120  # usage last, before [DONE]


def test_tool_call_stream():
    chunks, content, calls, finish, _usage = read_stream(sse_stream(CALLS, usage=USAGE, **IDS))
    assert content == "Let me look."
    assert calls == [{"id": "call_1", "name": "read", "arguments": '{"path":"a.txt"}'},
                     {"id": "call_2", "name": "ls", "arguments": "{}"}]
    assert finish == ["tool_calls"]
    assert chunks[-2].choices[0].finish_reason == "tool_calls" and chunks[-2].choices[0].delta.content is None


def test_stream_without_usage_has_no_usage_chunk():
    chunks, *_ , usage = read_stream(sse_stream(TEXT, usage=None, **IDS))
    assert usage is None and all(chunk.choices for chunk in chunks)


def test_length_finish_is_passed_on():
    _, _, _, finish, _ = read_stream(sse_stream(Reply(content="cut", finish_reason="length"), usage=None, **IDS))
    assert finish == ["length"]


def test_text_with_lone_surrogates_still_encodes():
    """Issue 18 item 2: a lone surrogate in model output is repaired to U+FFFD (as in requests), not passed on."""
    frames = sse_stream(Reply(content="half an emoji \ud83d"), usage=None, **IDS)
    assert json.loads(frames[1][6:])["choices"][0]["delta"]["content"] == "half an emoji \ufffd"


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=10)
json_objects = st.dictionaries(st.text(max_size=5), st.none() | st.integers() | st.text(max_size=10), max_size=3)


@given(
    st.none() | st.text(max_size=40),
    st.lists(st.tuples(names, json_objects), max_size=4),
)
def test_fuzz_any_reply_streams_into_what_openclaw_accepts(content, calls):
    tool_calls = [ToolCall(f"call_{i}", name, json.dumps(args)) for i, (name, args) in enumerate(calls)]
    reply = Reply(content=content, tool_calls=tool_calls, finish_reason="tool_calls" if tool_calls else "stop")
    _, streamed, streamed_calls, finish, usage = read_stream(sse_stream(reply, usage=USAGE, **IDS))
    assert streamed == (content or "")
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed_calls] == [(n, a) for n, a in calls]
    assert finish == [reply.finish_reason] and finish[0] in ("stop", "tool_calls", "length")
    ChatCompletion.model_validate_json(completion_body(reply, usage=usage and USAGE, **IDS))


# --- usage ---------------------------------------------------------------------------------


def test_usage_estimate_counts_what_was_sent_including_tool_descriptions():
    raw = recorded_requests()[0][1]
    request = parse_chat_request(raw)
    reply = Reply(content="x" * 400, generated_chars=400)
    prompt_mode = estimate_usage(build_kernel_call(request, model(tools="prompt"), "a"), reply)
    none_mode = estimate_usage(build_kernel_call(request, model(tools="none"), "a"), reply)
    native_mode = estimate_usage(build_kernel_call(request, model(tools="native"), "a"), reply)
    # ~4 bytes a token: the 61 KB request is about 15k tokens; the ~10 KB of tool schemas are counted
    assert 13_000 < prompt_mode.prompt_tokens < 17_000
    assert prompt_mode.prompt_tokens - none_mode.prompt_tokens > 2_000
    assert abs(native_mode.prompt_tokens - prompt_mode.prompt_tokens) < 1_000
    assert prompt_mode.completion_tokens == 100
    assert prompt_mode.total_tokens == prompt_mode.prompt_tokens + 100
    from_request = estimate_usage(request, reply)
    assert abs(from_request.prompt_tokens - native_mode.prompt_tokens) < 500


def test_usage_counts_images_and_tool_calls():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
    request = parse_chat_request(body([{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]))
    reply = Reply(content=None, tool_calls=[ToolCall("c", "ls", '{"path":"/very/long/path"}')])
    usage = estimate_usage(build_kernel_call(request, model(), "a"), reply)
    assert 700 < usage.prompt_tokens < 1_000  # one image, not 25k tokens of base64
    assert usage.completion_tokens > 0


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [InvalidRequest("messages[2].content: expected str"), KernelTextDropped("dropped")])
def test_error_body_is_openais_shape(error):
    parsed = json.loads(error_body(error))
    assert set(parsed) == {"error"}
    assert parsed["error"]["message"] == error.message
    assert parsed["error"]["type"] and parsed["error"]["code"]
