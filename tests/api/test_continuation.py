"""Answers longer than the kernel's 1000-token cap, through a real aiosd and a fake kernel that cuts them."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from aiosd.service import continuation
from aiosd.translate import stitch
from tests.support.endpoint import TOOLS, read_sse, stack
from tests.support.fake_kernel import CHARS_PER_TOKEN, Hang, LLMFailure, ServerError, Text
from tests.support.long_answers import WRITE_TOOL, file_content, prose, write_call

CAP_CHARS = 1000 * CHARS_PER_TOKEN
TEXT_10K = prose(10_240)
NO_RETRY = "retry: {max_retries: 0}"


def _answer_llm(text: str):
    return lambda messages, tools, model: Text(text)


def _sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for frame in text.split("\n\n"):
        if frame:
            name, data = frame.split("\n", 1)
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def _anthropic_text(events: list[tuple[str, dict]]) -> str:
    return "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta"
                   and e["delta"]["type"] == "text_delta")


async def _ask(client: httpx.AsyncClient, dialect: str, *, stream: bool, tools=None, **extra) -> httpx.Response:
    messages = [{"role": "user", "content": "tell me a long story"}]
    if dialect == "openai":
        body = {"model": "mock-model", "messages": messages, "stream": stream, **extra}
        if tools:
            body["tools"] = tools
        return await client.post("/chat/completions", json=body)
    body = {"model": "mock-model", "messages": messages, "stream": stream, "max_tokens": 8192, **extra}
    if tools:
        body["tools"] = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in tools]
    return await client.post("/messages", json=body)


def _content(response: httpx.Response, dialect: str, stream: bool) -> tuple[str, str]:
    """(text, finish reason in the dialect's words)."""
    assert response.status_code == 200, response.text[:300]
    if dialect == "openai":
        if stream:
            sse = read_sse(response.text)
            return sse.content, sse.finish_reasons[-1]
        choice = response.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    if stream:
        events = _sse_events(response.text)
        [stop] = [e["delta"]["stop_reason"] for name, e in events if name == "message_delta"]
        return _anthropic_text(events), stop
    body = response.json()
    return "".join(b["text"] for b in body["content"] if b["type"] == "text"), body["stop_reason"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
async def test_a_10_kb_text_arrives_whole(tmp_path, dialect, stream):
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm(TEXT_10K)
        response = await _ask(s.client, dialect, stream=stream)
        text, finish = _content(response, dialect, stream)
        async with httpx.AsyncClient(base_url=s.aiosd.url, timeout=10) as plain:
            live = (await plain.get("/ui/api/live")).json()
            metrics = (await plain.get("/metrics")).text

    assert text == TEXT_10K
    assert finish == ("stop" if dialect == "openai" else "end_turn")
    assert s.kernel.query_count == 3  # 4000 + 4000 + 2240 characters
    if not stream:  # a stream's headers left with the first piece
        assert response.headers["x-aiosd-continuations"] == "2"
        assert response.headers["x-aiosd-attempts"] == "3"
    # Each continuation: the same conversation, the answer so far as the assistant's turn, then the ask.
    second, third = s.query_data(1)["messages"], s.query_data(2)["messages"]
    assert second[:-2] == s.query_data(0)["messages"]
    assert second[-2] == {"role": "assistant", "content": TEXT_10K[:CAP_CHARS]}
    assert second[-1] == {"role": "user", "content": stitch.CONTINUE_INSTRUCTION}
    assert third[-2] == {"role": "assistant", "content": TEXT_10K[: 2 * CAP_CHARS]}
    assert [row["pieces"] for row in live["requests"]] == [3]
    assert 'aiosd_continued_answers_total{outcome="complete"} 1.0' in metrics
    assert "aiosd_continuation_calls_total 2.0" in metrics


async def test_a_stream_sends_the_first_piece_when_the_first_kernel_call_answers(tmp_path):
    hang = Hang()
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm(TEXT_10K)
        s.kernel.script(Text(TEXT_10K), hang)  # the first call answers (cut); the second waits for us
        body = {"model": "mock-model", "messages": [{"role": "user", "content": "story"}], "stream": True}
        async with s.client.stream("POST", "/chat/completions", json=body) as response:
            assert response.status_code == 200
            received = ""
            chunks = response.aiter_text()
            while len(_streamed_text(received)) < CAP_CHARS:
                received += await anext(chunks)
            # The whole first piece is out while the second kernel call has not answered.
            assert _streamed_text(received) == TEXT_10K[:CAP_CHARS]
            hang.release()
            async for chunk in chunks:
                received += chunk
    assert read_sse(received).content == TEXT_10K


def _streamed_text(received: str) -> str:
    """The content of the complete SSE frames received so far."""
    frames = received.split("\n\n")[:-1]
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames if f != "data: [DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
async def test_a_12_kb_write_arrives_as_one_tool_call_byte_for_byte(tmp_path, dialect, stream):
    content = file_content(12_288)
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm(write_call("notes/big.txt", content))
        response = await _ask(s.client, dialect, stream=stream, tools=[*TOOLS, WRITE_TOOL])
    assert response.status_code == 200, response.text[:300]
    if dialect == "openai":
        if stream:
            sse = read_sse(response.text)
            calls, finish = sse.tool_calls, sse.finish_reasons[-1]
            arguments = [json.loads(c["arguments"]) for c in calls]
        else:
            choice = response.json()["choices"][0]
            calls, finish = choice["message"]["tool_calls"], choice["finish_reason"]
            arguments = [json.loads(c["function"]["arguments"]) for c in calls]
        assert finish == "tool_calls"
    else:
        if stream:
            events = _sse_events(response.text)
            arguments = [json.loads(e["delta"]["partial_json"]) for name, e in events
                         if name == "content_block_delta" and e["delta"]["type"] == "input_json_delta"]
        else:
            arguments = [b["input"] for b in response.json()["content"] if b["type"] == "tool_use"]
    assert arguments == [{"path": "notes/big.txt", "content": content}]
    assert s.kernel.query_count == 4  # 12.5 KB in 4000-character pieces


async def test_an_answer_cut_between_two_invokes_gets_its_second_call(tmp_path):
    first = '<invoke name="write">\n<parameter name="path">a.txt</parameter>\n<parameter name="content">'
    head = f"Writing, then listing.\n<function_calls>\n{first}"
    closing = "</parameter>\n</invoke>\n"
    pad = CAP_CHARS - len(head) - len(closing)
    answer = f'{head}{"x" * pad}{closing}<invoke name="ls"/>\n</function_calls>'
    assert answer[:CAP_CHARS].endswith("</invoke>\n")  # the kernel cuts right between the invokes
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm(answer)
        response = await _ask(s.client, "openai", stream=False, tools=[*TOOLS, WRITE_TOOL])
    choice = response.json()["choices"][0]
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["write", "ls"]
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["content"] == "x" * pad
    assert choice["message"]["content"] == "Writing, then listing."


def _repeat_last_line(partial: str, rest: str) -> Text:
    """A model that, asked to continue, starts again at the beginning of the last complete line."""
    start = partial.rfind("\n", 0, partial.rfind("\n")) + 1
    return Text(partial[start:] + rest)


def _reopen_block(partial: str, rest: str) -> Text:
    """A model that opens the <function_calls> block and the invoke again before going on."""
    return Text('<function_calls>\n<invoke name="write">\n<parameter name="path">notes/big.txt</parameter>\n'
                '<parameter name="content">' + rest)


@pytest.mark.parametrize("model", [_repeat_last_line, _reopen_block], ids=["repeats-last-line", "reopens-block"])
async def test_a_model_that_repeats_itself_on_continuing_loses_and_duplicates_nothing(tmp_path, model):
    content = file_content(9_000)
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm(write_call("notes/big.txt", content))
        s.kernel.continue_with = model
        response = await _ask(s.client, "openai", stream=True, tools=[*TOOLS, WRITE_TOOL])
    [call] = read_sse(response.text).tool_calls
    assert json.loads(call["arguments"]) == {"path": "notes/big.txt", "content": content}
    assert s.kernel.query_count >= 3


@pytest.mark.parametrize("reply", ["nothing more", "Nothing more.", ""], ids=["nothing-more", "sentence", "empty"])
async def test_continuing_a_complete_answer_is_harmless(tmp_path, reply):
    # About 3,000 characters ending without punctuation (a list item): it looks cut, but was complete.
    complete = prose(2_900) + "\n\n- install the package\n- run the tests"
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm(complete)
        s.kernel.continue_with = lambda partial, rest: Text(reply)
        whole = await _ask(s.client, "openai", stream=False)
        streamed = await _ask(s.client, "openai", stream=True)
    assert _content(whole, "openai", False) == (complete, "stop")
    assert _content(streamed, "openai", True) == (complete, "stop")
    assert whole.headers["x-aiosd-continuations"] == "1"
    assert s.kernel.query_count == 4


@pytest.mark.parametrize("failure", [LLMFailure(429), ServerError()], ids=["429-past-the-policy", "kernel-error"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_continuation_that_fails_returns_what_was_certain_with_length_and_says_why(
        tmp_path, caplog, failure, stream):
    caplog.set_level(logging.INFO, "aiosd")
    async with stack(tmp_path, NO_RETRY) as s:
        s.kernel.llm = _answer_llm(TEXT_10K)
        s.kernel.script(None, None, failure)  # two pieces, then the third call fails
        response = await _ask(s.client, "openai", stream=stream)
    assert _content(response, "openai", stream) == (TEXT_10K[: 2 * CAP_CHARS], "length")
    code = "rate_limit_exceeded" if isinstance(failure, LLMFailure) else "kernel_rejected"
    if not stream:
        assert response.headers["x-aiosd-continuation-stopped"] == code
        assert response.headers["x-aiosd-continuations"] == "2"
    [line] = [r.getMessage() for r in caplog.records if "answer continued" in r.getMessage()]
    assert "2 pieces (4000+4000 characters" in line and "a continuation call failed" in line


async def test_a_failed_continuation_inside_a_write_returns_the_text_before_the_call(tmp_path):
    answer = write_call("big.txt", file_content(12_000), preface="Here it comes.\n\n")
    async with stack(tmp_path, NO_RETRY) as s:
        s.kernel.llm = _answer_llm(answer)
        s.kernel.script(None, LLMFailure(429))
        response = await _ask(s.client, "openai", stream=False, tools=[*TOOLS, WRITE_TOOL])
    choice = response.json()["choices"][0]
    # Nothing half-written is run, and no markup of the cut call reaches the client.
    assert (choice["message"]["content"], choice["finish_reason"]) == ("Here it comes.", "length")
    assert "tool_calls" not in choice["message"]


async def test_the_deadline_cuts_the_chain(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, "aiosd")
    kernel_answers = []

    def clock() -> float:  # the chain's clock: the deadline passes once the second piece is in
        return time.monotonic() + (1e6 if len(kernel_answers) >= 2 else 0.0)

    async with stack(tmp_path) as s:
        def llm(messages, tools, model):
            kernel_answers.append(1)
            return Text(TEXT_10K)
        s.kernel.llm = llm
        monkeypatch.setattr(continuation, "clock", clock)
        response = await _ask(s.client, "anthropic", stream=False)
    assert _content(response, "anthropic", False) == (TEXT_10K[: 2 * CAP_CHARS], "max_tokens")
    assert response.headers["x-aiosd-continuation-stopped"] == "deadline"
    assert s.kernel.query_count == 2
    assert any("the request's deadline passed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
async def test_the_clients_max_tokens_wins(tmp_path, dialect):
    limit = {"max_tokens": 1500} if dialect == "anthropic" else {"max_completion_tokens": 1500}
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm(TEXT_10K)
        response = await _ask(s.client, dialect, stream=False, **limit)
        streamed = await _ask(s.client, dialect, stream=True, **limit)
    length = "length" if dialect == "openai" else "max_tokens"
    assert _content(response, dialect, False) == (TEXT_10K[: 1500 * CHARS_PER_TOKEN], length)
    assert _content(streamed, dialect, True) == (TEXT_10K[: 1500 * CHARS_PER_TOKEN], length)
    assert response.headers["x-aiosd-continuation-stopped"] == "max_tokens"
    assert s.kernel.query_count == 4  # two calls each: 4000 characters (1000 tokens) was not yet the limit


async def test_max_calls_bounds_the_chain(tmp_path):
    async with stack(tmp_path, "continuation: {max_calls: 2}") as s:
        s.kernel.llm = _answer_llm(TEXT_10K)
        response = await _ask(s.client, "openai", stream=False)
    assert _content(response, "openai", False) == (TEXT_10K[: 2 * CAP_CHARS], "length")
    assert response.headers["x-aiosd-continuation-stopped"] == "max_calls"
    assert s.kernel.query_count == 2


async def test_continuation_enabled_false_returns_the_cut_answer_as_the_kernel_gave_it(tmp_path):
    async with stack(tmp_path, "continuation: {enabled: false}") as s:
        s.kernel.llm = _answer_llm(TEXT_10K)
        response = await _ask(s.client, "openai", stream=False)
    assert _content(response, "openai", False) == (TEXT_10K[:CAP_CHARS], "stop")
    assert "x-aiosd-continuations" not in response.headers
    assert s.kernel.query_count == 1


async def test_a_short_answer_is_not_continued(tmp_path):
    async with stack(tmp_path) as s:
        s.kernel.llm = _answer_llm("a short answer without a full stop")
        response = await _ask(s.client, "openai", stream=True)
    assert _content(response, "openai", True) == ("a short answer without a full stop", "stop")
    assert s.kernel.query_count == 1
