"""The fake AIOS kernel behaves as the real one is documented to (guards the fake against drift)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.fake_kernel import (
    ANSWER_TOKEN_CAP,
    CHARS_PER_TOKEN,
    Delay,
    Drip,
    Empty,
    FakeKernel,
    Garbage,
    Hang,
    LLMFailure,
    RawResponse,
    ResetMidBody,
    Retried,
    RetryAfter,
    ServerError,
    Text,
    ToolCall,
    ToolCalls,
    TooSlow,
    Unprocessable,
    Unreachable,
    echo_llm,
)

ENVELOPE_KEYS = {"response", "start_times", "end_times", "waiting_times", "turnaround_times"}


def query_body(
    text: str = "hello", *, model: str | None = "gpt-4o-mini", messages=None, tools=None, **query_data
) -> dict:
    data = {
        "messages": messages if messages is not None else [{"role": "user", "content": text}],
        "tools": tools if tools is not None else [],
        "action_type": "chat",
        "message_return_type": "text",
    }
    if model is not None:
        data["llms"] = [{"name": model, "backend": "openai"}]
    data.update(query_data)
    return {"agent_name": "openclaw", "query_type": "llm", "query_data": data}


def tool(name: str) -> dict:
    no_parameters = {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": no_parameters}}


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def shared_kernel():
    with FakeKernel() as kernel:
        yield kernel


@pytest.fixture
def kernel(shared_kernel):
    shared_kernel.clear_script()
    yield shared_kernel
    shared_kernel.clear_script()


@pytest.fixture
def client(kernel):
    with httpx.Client(base_url=kernel.url, timeout=5) as http:
        yield http


def ask(client: httpx.Client, body: dict) -> dict:
    answer = client.post("/query", json=body)
    assert answer.status_code == 200, answer.text
    envelope = answer.json()
    assert set(envelope) == ENVELOPE_KEYS
    return envelope["response"]


# ------------------------------------------------------------------ plain answers


def test_a_plain_answer_has_the_real_envelope(client, kernel):
    answer = client.post("/query", json=query_body("hi"))
    assert answer.status_code == 200
    assert answer.json() == {
        "response": {
            "response_class": "llm",
            "response_message": "echo: hi",
            "tool_calls": None,
            "finished": True,
            "error": None,
            "status_code": 200,
        },
        "start_times": [],
        "end_times": [],
        "waiting_times": [],
        "turnaround_times": [],
    }
    assert kernel.queries[-1] == query_body("hi")


def test_the_llm_stops_at_the_cap_and_goes_on_where_the_assistant_stopped(client, kernel):
    whole = "".join(f"word{i} " for i in range(2000))  # 15,780 characters
    kernel.llm = lambda messages, tools, model: Text(whole)
    try:
        first = ask(client, query_body("write"))["response_message"]
        assert first == whole[: ANSWER_TOKEN_CAP * CHARS_PER_TOKEN]  # cut, silently: no finish reason
        asked = [{"role": "user", "content": "write"}, {"role": "assistant", "content": whole[:6000]},
                 {"role": "user", "content": "Please continue exactly where you stopped."}]
        assert ask(client, query_body(messages=asked))["response_message"] == whole[6000:10000]
        asked[1]["content"] = whole
        assert ask(client, query_body(messages=asked))["response_message"] == "nothing more"
        # An assistant turn that is not the start of the answer is an ordinary conversation.
        asked[1]["content"] = "something else"
        assert ask(client, query_body(messages=asked))["response_message"] == whole[:4000]
        kernel.answer_token_cap = None
        assert ask(client, query_body("write"))["response_message"] == whole
    finally:
        kernel.llm, kernel.answer_token_cap = echo_llm, ANSWER_TOKEN_CAP


def test_routing_uses_the_name_only_and_no_llms_means_the_first_model(client, kernel):
    seen = []
    kernel.llm = lambda messages, tools, model: seen.append(model) or Text(model)
    try:
        assert ask(client, query_body(model="qwen2.5:7b"))["response_message"] == "qwen2.5:7b"
        body = query_body(model=None)
        body["query_data"]["llms"] = [{"name": "qwen2.5:7b", "backend": "anthropic"}]
        assert ask(client, body)["response_message"] == "qwen2.5:7b"
        assert ask(client, query_body(model=None))["response_message"] == "gpt-4o-mini"
    finally:
        kernel.llm = echo_llm
    assert seen == ["qwen2.5:7b", "qwen2.5:7b", "gpt-4o-mini"]


def test_an_unknown_model_is_a_500_inside_http_200(client):
    response = ask(client, query_body(model="nope"))
    assert response["status_code"] == 500 and response["response_message"] is None
    assert response["error"].startswith("Selected LLMs are not all available")


def test_empty_content_comes_back_as_the_string_None_with_a_warning(client, kernel):
    kernel.script(Empty())
    response = ask(client, query_body())
    assert response["response_message"] == "None" and response["status_code"] == 200
    assert response["error"]


def test_developer_becomes_system_and_everything_else_reaches_the_llm_unchanged(client, kernel):
    messages = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:x"}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "file body"},
    ]
    ask(client, query_body(messages=messages))
    seen = kernel.llm_requests[-1].messages
    assert seen[0] == {"role": "system", "content": "be brief"}
    assert seen[1:] == messages[1:]


def test_no_messages_is_a_400_inside_http_200(client):
    response = ask(client, query_body(messages=[]))
    assert response["status_code"] == 400 and response["response_message"] is None


def test_content_of_the_wrong_type_is_misreported_as_a_connection_error(client):
    response = ask(client, query_body(messages=[{"role": "user", "content": 42}]))
    assert response["status_code"] == 503 and "Connection Error" in response["error"]


# ------------------------------------------------------------------ LLM failures


@pytest.mark.parametrize(
    ("failure", "status", "attempts"),
    [
        (LLMFailure(429, "upstream secret text", retry_after=30), 429, 3),
        (LLMFailure(500, "upstream secret text"), 502, 3),
        (LLMFailure(400, "upstream secret text"), 400, 1),
        (Unreachable(), 503, 3),
        (TooSlow(), 408, 3),
    ],
)
def test_llm_failures_come_back_inside_http_200_after_the_kernels_own_attempts(
    client, kernel, failure, status, attempts
):
    before = kernel.attempts
    kernel.script(failure)
    answer = client.post("/query", json=query_body())
    assert answer.status_code == 200 and "retry-after" not in answer.headers
    response = answer.json()["response"]
    assert response["status_code"] == status and response["response_message"] is None
    assert "upstream secret text" not in answer.text and "gpt-4o-mini" in response["error"]
    assert kernel.attempts - before == attempts


def test_a_429_message_names_the_model(client, kernel):
    kernel.script(LLMFailure(429))
    assert ask(client, query_body())["error"].startswith("Rate Limit Exceeded for model 'gpt-4o-mini'")


def test_the_kernels_retries_hide_a_short_streak_of_429s(client, kernel):
    answers = iter([LLMFailure(429), LLMFailure(429), Text("finally")])
    kernel.llm = lambda messages, tools, model: next(answers)
    before = kernel.attempts
    try:
        assert ask(client, query_body())["response_message"] == "finally"
    finally:
        kernel.llm = echo_llm
    assert kernel.attempts - before == 3
    kernel.script(Retried(LLMFailure(429), Text("scripted")))
    assert ask(client, query_body())["response_message"] == "scripted"


def test_an_llm_callable_that_raises_is_the_kernels_generic_500(client, kernel):
    def broken(messages, tools, model):
        raise RuntimeError("bug in a test")

    kernel.llm = broken
    try:
        response = ask(client, query_body())
    finally:
        kernel.llm = echo_llm
    assert response["status_code"] == 500 and "unexpected error" in response["error"]


async def test_an_async_llm_callable_is_awaited(kernel):
    async def llm(messages, tools, model):
        await asyncio.sleep(0)
        return "from async"

    kernel.llm = llm
    try:
        async with httpx.AsyncClient(base_url=kernel.url) as http:
            answer = await http.post("/query", json=query_body())
    finally:
        kernel.llm = echo_llm
    assert answer.json()["response"]["response_message"] == "from async"


def test_script_items_are_used_one_per_query_then_the_llm_callable(client, kernel):
    kernel.script(Text("one"), "two")
    assert [ask(client, query_body("x"))["response_message"] for _ in range(3)] == ["one", "two", "echo: x"]
    assert kernel.script_left == 0


# ------------------------------------------------------------------ bodies it cannot parse


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"query_type": "llm", "query_data": {"messages": []}}',
        b'{"agent_name": "a", "query_data": {"messages": []}}',
        b'{"agent_name": "a", "query_type": "llm"}',
        b'{"agent_name": 5, "query_type": "llm", "query_data": {"messages": []}}',
        b'{"agent_name": "a", "query_type": "llm", "query_data": {"messages": "hi"}}',
        b'{"agent_name": "a", "query_type": "llm", "query_data": {"messages": [], "llms": ["gpt-4o-mini"]}}',
        b"[]",
        b"\xff\xfe not utf-8",
        b"",
    ],
)
def test_bodies_the_kernel_cannot_parse_get_a_fastapi_422(client, content):
    answer = client.post("/query", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all({"type", "loc", "msg"} <= set(entry) for entry in detail)


def test_a_422_for_query_data_is_noisy_one_entry_per_query_type(client):
    answer = client.post("/query", json={"agent_name": "a", "query_type": "llm", "query_data": "text"})
    members = [entry["loc"][2] for entry in answer.json()["detail"]]
    assert members == ["LLMQuery", "ToolQuery", "MemoryQuery", "StorageQuery"]


# ------------------------------------------------------------------ tools


def test_a_flat_tool_is_a_400(client):
    flat = {"name": "read", "description": "d", "parameters": {}}
    assert ask(client, query_body(tools=[flat]))["status_code"] == 400


def test_tool_calls_come_back_parsed_with_names_mapped_back_and_ids_filled(client, kernel):
    kernel.script(
        ToolCalls([ToolCall("read", '{"path": "a"}', "call_1"), ToolCall("github__create_issue", '{"title": "t"}')])
    )
    response = ask(client, query_body(tools=[tool("read"), tool("github/create_issue")]))
    assert response["response_message"] is None and response["status_code"] == 200
    first, second = response["tool_calls"]
    assert first == {"name": "read", "parameters": {"path": "a"}, "id": "call_1"}
    assert second["name"] == "github/create_issue" and second["parameters"] == {"title": "t"}
    assert is_uuid(second["id"])
    assert [t["function"]["name"] for t in kernel.llm_requests[-1].tools] == ["read", "github__create_issue"]


def test_every_double_underscore_becomes_a_slash_on_the_way_back(client, kernel):
    kernel.script(ToolCalls([("github__create_issue", "{}")]))
    response = ask(client, query_body(tools=[tool("github__create_issue")]))
    assert response["tool_calls"][0]["name"] == "github/create_issue"


@pytest.mark.parametrize(
    "output",
    [Text("plain words"), ToolCalls([("read", "{}")], text="let me read"), ToolCalls([("read", "{}")], text="")],
    ids=["text", "text-and-calls", "empty-string-and-calls"],
)
def test_with_tools_present_any_content_wins_and_everything_is_lost(client, kernel, output):
    kernel.script(output)
    response = ask(client, query_body(tools=[tool("read")]))
    assert response["response_message"] is None and response["tool_calls"] == [] and response["status_code"] == 200


def test_text_that_is_a_json_tool_call_becomes_a_tool_call_with_a_uuid(client, kernel):
    kernel.script(Text('{"name": "read", "arguments": {"path": "b"}}'))
    (call,) = ask(client, query_body(tools=[tool("read")]))["tool_calls"]
    assert call["name"] == "read" and call["parameters"] == {"path": "b"} and is_uuid(call["id"])


@pytest.mark.parametrize(
    "output",
    [Empty(), ToolCalls([("read", "")]), ToolCalls([("read", "{oops")])],
    ids=["nothing", "empty-arguments", "broken-arguments"],
)
def test_undecodable_tool_answers_are_a_500_tool_call_decoding_error(client, kernel, output):
    kernel.script(output)
    response = ask(client, query_body(tools=[tool("read")]))
    assert response["status_code"] == 500 and response["error"].startswith("Tool call decoding error")


def test_vllm_and_sglang_backends_fail_every_request_with_tools(client, kernel):
    kernel.script(ToolCalls([("read", "{}")]))
    response = ask(client, query_body(model="meta-llama/Llama-3.1-8B-Instruct", tools=[tool("read")]))
    assert response["status_code"] == 500
    assert response["error"] == "Tool call decoding error: 'list' object has no attribute 'choices'"
    assert ask(client, query_body(model="meta-llama/Llama-3.1-8B-Instruct"))["status_code"] == 200


# ------------------------------------------------------------------ other endpoints


def test_the_model_list_leaks_hostname_and_api_key(client):
    answer = client.get("/core/llms/list").json()
    assert answer["status"] == "success"
    assert answer["llms"][0] == {
        "name": "gpt-4o-mini",
        "backend": "openai",
        "hostname": "http://10.0.0.5:11434",
        "api_key": "sk-fake-kernel-secret",
    }


def test_the_model_list_before_the_llm_core_is_up():
    with FakeKernel(llm_core_ready=False) as kernel:
        answer = httpx.get(kernel.url + "/core/llms/list").json()
    assert answer == {"status": "warning", "message": "LLM core not initialized", "llms": []}


def test_status_says_ok_even_when_the_scheduler_is_dead():
    with FakeKernel(scheduler_dead=True) as kernel:
        assert httpx.get(kernel.url + "/status").json()["status"] == "ok"
        with pytest.raises(httpx.TimeoutException):
            httpx.post(kernel.url + "/query", json=query_body(), timeout=0.2)
        assert kernel.attempts == 0 and kernel.busy_workers == 1
        assert httpx.get(kernel.url + "/status").json()["status"] == "ok"


def test_cors_reflects_any_origin_with_credentials(client):
    evil = {"origin": "https://evil.example"}
    for answer in (client.get("/status", headers=evil), client.post("/query", json=query_body(), headers=evil)):
        assert answer.headers["access-control-allow-origin"] == "https://evil.example"
        assert answer.headers["access-control-allow-credentials"] == "true"
    preflight = client.options(
        "/query",
        headers={**evil, "access-control-request-method": "POST", "access-control-request-headers": "content-type"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://evil.example"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"


def test_selecting_llms_breaks_every_later_query_that_names_llms():
    with FakeKernel() as kernel, httpx.Client(base_url=kernel.url) as http:
        assert http.post("/user/select/llms", json=[{"name": "gpt-4o-mini"}]).status_code == 200
        broken = http.post("/query", json=query_body())
        assert broken.status_code == 500 and broken.json() == {"detail": "'provider'"}
        assert http.post("/query", json=query_body(model=None)).json()["response"]["status_code"] == 200


# ------------------------------------------------------------------ transport faults


@pytest.mark.parametrize(
    ("item", "status"),
    [(ServerError("boom"), 500), (Unprocessable(), 422), (RawResponse(503, b"down"), 503)],
)
def test_http_error_items(client, kernel, item, status):
    kernel.script(item)
    answer = client.post("/query", json=query_body())
    assert answer.status_code == status
    if status == 500:
        assert answer.json() == {"detail": "boom"}
    if status == 422:
        assert isinstance(answer.json()["detail"], list)


def test_garbage_is_a_non_json_200(client, kernel):
    kernel.script(Garbage())
    answer = client.post("/query", json=query_body())
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_retry_after_header(client, kernel):
    kernel.script(RetryAfter(7))
    answer = client.post("/query", json=query_body())
    assert answer.status_code == 429 and answer.headers["retry-after"] == "7"


def test_drip_sends_the_body_in_small_slow_pieces(client, kernel):
    kernel.script(Drip(interval=0.001, chunk_size=20))
    with client.stream("POST", "/query", json=query_body("drip")) as answer:
        pieces = list(answer.iter_raw())
    assert len(pieces) > 5
    assert b"echo: drip" in b"".join(pieces)


@pytest.mark.parametrize("hard", [True, False])
def test_reset_mid_body_breaks_the_answer(client, kernel, hard):
    kernel.script(ResetMidBody(hard=hard))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post("/query", json=query_body())
    assert ask(client, query_body("after"))["response_message"] == "echo: after"


def test_delay_answers_late(client, kernel):
    kernel.script(Delay(0.05, then=Text("late")))
    started = time.monotonic()
    assert ask(client, query_body())["response_message"] == "late"
    assert time.monotonic() - started >= 0.05


# ------------------------------------------------------------------ hangs, slots, disconnects


def test_a_hang_holds_until_released(kernel):
    hang = Hang()
    kernel.script(hang)
    result = {}
    caller = threading.Thread(
        target=lambda: result.update(answer=httpx.post(kernel.url + "/query", json=query_body(), timeout=5))
    )
    caller.start()
    kernel.wait_until(lambda k: k.busy_workers == 1 and k.in_flight == 1, what="a hung call")
    hang.release(Text("released"))
    caller.join(5)
    assert result["answer"].json()["response"]["response_message"] == "released"


async def test_a_client_that_disconnects_does_not_cancel_the_kernels_work(kernel):
    hang = Hang()
    kernel.script(hang)
    disconnects, finished = kernel.disconnects, kernel.finished_after_disconnect
    async with httpx.AsyncClient(base_url=kernel.url) as http:
        call = asyncio.create_task(http.post("/query", json=query_body()))
        await kernel.wait_until_async(lambda k: k.busy_workers == 1, what="a hung call")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await kernel.wait_for_disconnects_async(disconnects + 1)
    await kernel.wait_until_async(lambda k: k.in_flight == 0, what="the HTTP request to end")
    assert kernel.busy_workers == 1  # the slot stays held
    hang.release()
    await kernel.wait_until_async(
        lambda k: k.finished_after_disconnect == finished + 1, what="the abandoned work to finish"
    )
    assert kernel.busy_workers == 0


async def test_the_worker_limit_queues_calls_and_counts_the_peak():
    hang = Hang()
    with FakeKernel(workers=2) as kernel:
        kernel.script(hang, hang, hang)
        async with httpx.AsyncClient(base_url=kernel.url) as http:
            calls = [asyncio.create_task(http.post("/query", json=query_body(str(i)))) for i in range(3)]
            await kernel.wait_for_queries_async(3)
            await kernel.wait_until_async(lambda k: k.busy_workers == 2 and k.attempts == 2, what="two busy workers")
            assert kernel.in_flight == 3 and kernel.max_in_flight == 3
            hang.release()
            answers = await asyncio.gather(*calls)
        assert [a.json()["response"]["status_code"] for a in answers] == [200, 200, 200]
        assert kernel.max_busy_workers == 2 and kernel.attempts == 3


async def test_an_llms_entry_without_a_name_hangs_its_whole_batch_for_good():
    with FakeKernel(batch_interval=math.inf) as kernel:
        async with httpx.AsyncClient(base_url=kernel.url) as http:
            poisoned = query_body()
            poisoned["query_data"]["llms"] = [{"backend": "openai"}]
            calls = [asyncio.create_task(http.post("/query", json=body)) for body in (poisoned, query_body("innocent"))]
            await kernel.wait_until_async(lambda k: k.queued == 2, what="two queued calls")
            kernel.run_batch_now()
            await kernel.wait_until_async(lambda k: k.poisoned_batches == 1, what="the poisoned batch")
            # The scheduler goes on with the next batch; the poisoned one never answers.
            later = asyncio.create_task(http.post("/query", json=query_body("later")))
            await kernel.wait_until_async(lambda k: k.queued == 1, what="the next call")
            kernel.run_batch_now()
            assert (await later).json()["response"]["response_message"] == "echo: later"
            assert not any(call.done() for call in calls)
            for call in calls:
                call.cancel()
            await kernel.wait_for_disconnects_async(2)
            assert kernel.busy_workers == 2 and kernel.batches == [2, 1]


async def test_a_batch_waits_for_its_slowest_member():
    hang = Hang()
    with FakeKernel(batch_interval=math.inf) as kernel:
        kernel.script(hang, Text("quick"))
        async with httpx.AsyncClient(base_url=kernel.url) as http:
            slow = asyncio.create_task(http.post("/query", json=query_body("slow")))
            await kernel.wait_until_async(lambda k: k.queued == 1, what="the slow call queued")
            quick = asyncio.create_task(http.post("/query", json=query_body("quick")))
            await kernel.wait_until_async(lambda k: k.queued == 2, what="both calls queued")
            kernel.run_batch_now()
            await kernel.wait_until_async(lambda k: k.attempts == 2, what="both LLM calls")
            assert kernel.in_flight == 2 and not quick.done()
            hang.release(Text("slow done"))
            assert (await quick).json()["response"]["response_message"] == "quick"
            assert (await slow).json()["response"]["response_message"] == "slow done"
        assert kernel.batches == [2]


def test_a_real_batch_interval_delays_every_call():
    with FakeKernel(batch_interval=0.05) as kernel:
        started = time.monotonic()
        answer = httpx.post(kernel.url + "/query", json=query_body("tick"), timeout=5)
        assert answer.json()["response"]["response_message"] == "echo: tick"
        assert time.monotonic() - started >= 0.05 and kernel.batches == [1]


def test_stopping_is_quick_while_calls_hang():
    kernel = FakeKernel().start()
    kernel.script(Hang(), Hang())
    errors = []

    def call():
        try:
            httpx.post(kernel.url + "/query", json=query_body(), timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    callers = [threading.Thread(target=call) for _ in range(2)]
    for caller in callers:
        caller.start()
    kernel.wait_for_in_flight(2)
    kernel.stop()  # returns although two calls still hang inside it
    for caller in callers:
        caller.join(5)
    assert len(errors) == 2


async def test_usable_from_inside_a_running_event_loop():
    with FakeKernel() as kernel:
        async with httpx.AsyncClient(base_url=kernel.url) as http:
            answer = await http.post("/query", json=query_body("async"))
        await kernel.wait_for_queries_async(1)
    assert answer.json()["response"]["response_message"] == "echo: async"


def test_releasing_a_hang_after_its_kernel_stopped_is_harmless():
    hang = Hang()
    with FakeKernel() as kernel:
        kernel.script(hang)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(kernel.url + "/query", json=query_body(), timeout=0.1)
    hang.release()


def test_reset_counters_forgets_earlier_calls(client, kernel):
    ask(client, query_body())
    kernel.wait_for_in_flight(0)  # the answer can reach the client before the server's bookkeeping ends
    kernel.reset_counters()
    assert kernel.queries == [] and kernel.query_count == 0 and kernel.attempts == 0 and kernel.max_in_flight == 0
    ask(client, query_body("fresh"))
    assert kernel.query_count == 1 and kernel.queries == [query_body("fresh")]


def test_waiters_time_out_with_a_clear_message(kernel):
    with pytest.raises(TimeoutError, match="/query calls"):
        kernel.wait_for_queries(10**9, timeout=0.01)


def test_runs_standalone_until_sigterm():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).with_name("fake_kernel.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--model", "tiny@ollama"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert re.search(rf"listening on http://127.0.0.1:{port}", process.stdout.readline())
        models = httpx.get(f"http://127.0.0.1:{port}/core/llms/list").json()["llms"]
        assert [(m["name"], m["backend"]) for m in models] == [("tiny", "ollama")]
        answer = httpx.post(f"http://127.0.0.1:{port}/query", json=query_body("cli", model="tiny"))
        assert answer.json()["response"]["response_message"] == "echo: cli"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
