"""Every way the kernel fails, seen by a client of a real aiosd: statuses, OpenAI error bodies, retries."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.endpoint import assert_openai_error, chat, read_sse, stack
from tests.support.fake_kernel import (
    Empty,
    Garbage,
    Hang,
    LLMFailure,
    RetryAfter,
    ServerError,
    Text,
    TooSlow,
    Unprocessable,
    Unreachable,
)

STREAMS = pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])


@STREAMS
async def test_two_rate_limits_then_an_answer(tmp_path, stream):
    async with stack(tmp_path) as s:
        s.kernel.script(LLMFailure(429), LLMFailure(429), Text("finally"))
        response = await s.client.post("/chat/completions", json=chat(stream=stream))
    assert response.status_code == 200
    assert response.headers["x-aiosd-attempts"] == "3"
    text = read_sse(response.text).content if stream else response.json()["choices"][0]["message"]["content"]
    assert text == "finally"
    assert s.kernel.query_count == 3


@STREAMS
async def test_rate_limits_beyond_max_retries_give_429_with_retry_after(tmp_path, stream):
    async with stack(tmp_path) as s:
        s.kernel.script(*[LLMFailure(429)] * 4)
        response = await s.client.post("/chat/completions", json=chat(stream=stream))
    error = assert_openai_error(response, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-aiosd-attempts"] == "4"
    assert "4 attempts" in error["message"] and "'mock-model'" in error["message"]
    assert s.kernel.query_count == 4


async def test_rate_limits_beyond_the_budget_stop_early_with_retry_after(tmp_path):
    extra = """
retry:
  backoff: {initial: "400ms", multiplier: 1.0, max: "1s", jitter: 0.0}
  budget: "500ms"
"""
    async with stack(tmp_path, extra) as s:
        s.kernel.script(*[LLMFailure(429)] * 4)
        response = await s.client.post("/chat/completions", json=chat())
    assert_openai_error(response, 429, "rate_limit_exceeded")
    # One wait of 400 ms fits the 500 ms budget; a second would not: aiosd answers after two calls
    # with two failures still scripted, instead of waiting on.
    assert response.headers["x-aiosd-attempts"] == "2"
    assert response.headers["retry-after"] == "1"
    assert s.kernel.query_count == 2


async def test_kernel_retry_after_header_is_passed_on(tmp_path):
    async with stack(tmp_path, "retry: {max_retries: 0}") as s:
        s.kernel.script(RetryAfter(7))
        response = await s.client.post("/chat/completions", json=chat())
    assert_openai_error(response, 429)
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize("said", ["100000000000000000000", "0"])
async def test_kernel_retry_after_is_clamped_like_the_schedulers(tmp_path, said):
    """Issue 18 item 12: a kernel's Retry-After reaches the client within 1-60 s, not as 10^20 s."""
    async with stack(tmp_path, "retry: {max_retries: 1}") as s:
        s.kernel.script(RetryAfter(said), RetryAfter(said))
        response = await s.client.post("/chat/completions", json=chat())
    assert_openai_error(response, 429)
    assert response.headers["retry-after"] == ("60" if said != "0" else "1")


@STREAMS
async def test_kernel_down_is_a_502_openai_error(tmp_path, stream):
    closed = f"http://127.0.0.1:{free_port()}"
    config = config_for(tmp_path, closed, "models: {map: {mock-model: {kernel_model: gpt-4o-mini}}}")
    async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.base_url) as client:
        response = await client.post("/chat/completions", json=chat(stream=stream))
    error = assert_openai_error(response, 502, "kernel_unreachable")
    assert closed in error["message"] and "'mock-model'" in error["message"] and "1 attempt" in error["message"]
    assert "x-request-id" in response.headers


@STREAMS
async def test_kernel_hanging_past_the_deadline_is_a_504_in_bounded_time(tmp_path, stream):
    hang = Hang()
    async with stack(tmp_path, 'kernel: {timeout: "300ms"}') as s:
        s.kernel.script(hang)
        started = time.monotonic()
        response = await s.client.post("/chat/completions", json=chat(stream=stream))
        took = time.monotonic() - started
        # Bounded: the answer came while the kernel still hung (it is released only now), and not
        # before aiosd's deadline.
        hang.release()
    assert_openai_error(response, 504, "kernel_timeout")
    assert took >= 0.3
    # A hung call holds a kernel worker for good: it is never retried onto another one.
    assert s.kernel.query_count == 1


# (what the fake kernel does, status a client gets, error code)
KERNEL_FAILURES = {
    "http-422": (Unprocessable(), 502, "kernel_rejected_body"),
    "http-500": (ServerError("boom"), 502, "kernel_rejected"),
    "html-garbage": (Garbage(), 502, None),
    "llm-400": (LLMFailure(400), 400, "llm_rejected_request"),
    "llm-401": (LLMFailure(401), 502, "kernel_llm_misconfigured"),
    "llm-404": (LLMFailure(404), 502, "kernel_llm_misconfigured"),
    "llm-408": (TooSlow(), 504, "llm_timeout"),
    "llm-429": (LLMFailure(429), 429, "rate_limit_exceeded"),
    "llm-500": (LLMFailure(500), 502, "kernel_rejected"),
    "llm-503": (Unreachable(), 503, "kernel_llm_unavailable"),
}


@STREAMS
@pytest.mark.parametrize("case", list(KERNEL_FAILURES))
async def test_kernel_failures_map_to_fitting_statuses(tmp_path, case, stream):
    item, status, code = KERNEL_FAILURES[case]
    async with stack(tmp_path, "retry: {max_retries: 0}") as s:
        s.kernel.script(item)
        response = await s.client.post("/chat/completions", json=chat(stream=stream))
    error = assert_openai_error(response, status, code)
    assert response.headers["x-aiosd-attempts"] == "1"
    # The kernel's generic sentence plus what aiosd knows: which model, how many attempts.
    assert "'mock-model'" in error["message"] and "'gpt-4o-mini'" in error["message"]
    assert "1 attempt" in error["message"]
    if status == 429:
        assert "retry-after" in response.headers
    # Nothing of the kernel's own secrets or raw bodies leaks into the message.
    assert "sk-fake-kernel-secret" not in response.text and "<html>" not in response.text


@STREAMS
async def test_the_kernels_literal_none_is_not_shown_as_text(tmp_path, stream):
    async with stack(tmp_path) as s:
        s.kernel.script(Empty())
        response = await s.client.post("/chat/completions", json=chat(stream=stream))
    assert response.status_code == 200
    if stream:
        sse = read_sse(response.text)
        assert sse.content == "" and sse.finish_reasons == ["stop"]
    else:
        assert response.json()["choices"][0]["message"]["content"] == ""
    assert "None" not in response.text


@STREAMS
async def test_unknown_model_is_404_listing_the_models(tmp_path, stream):
    async with stack(tmp_path) as s:
        response = await s.client.post("/chat/completions", json=chat(model="gpt-5-ultra", stream=stream))
    error = assert_openai_error(response, 404, "model_not_found")
    assert "gpt-5-ultra" in error["message"]
    assert "mock-model" in error["message"] and "sonnet" in error["message"]
    assert s.kernel.query_count == 0


async def test_models_lists_exactly_the_ids_that_work_and_no_kernel_secrets(tmp_path):
    async with stack(tmp_path, "models: {discover: true}") as s:
        await s.runtime.catalog.refresh()
        listing = await s.client.get("/models")
        assert listing.status_code == 200
        ids = [m["id"] for m in listing.json()["data"]]
        assert sorted(ids) == sorted(["sonnet", "mock-model", "gpt-4o-mini", "qwen2.5:7b",
                                      "meta-llama/Llama-3.1-8B-Instruct"])
        assert listing.json()["object"] == "list"
        assert all(m["object"] == "model" for m in listing.json()["data"])
        for text in ("hostname", "api_key", "sk-fake-kernel-secret", "10.0.0.5"):
            assert text not in listing.text
        # Every listed id answers; one that is not listed does not.
        for model_id in ids:
            answer = await s.client.post("/chat/completions", json=chat("ping", model=model_id))
            assert answer.status_code == 200, (model_id, answer.text)
        missing = await s.client.post("/chat/completions", json=chat(model="not-listed"))
        assert missing.status_code == 404
    routed = {model_id: q["query_data"]["llms"][0]["name"] for model_id, q in zip(ids, s.kernel.queries, strict=False)}
    assert routed == {"sonnet": "gpt-4o-mini", "mock-model": "gpt-4o-mini", "gpt-4o-mini": "gpt-4o-mini",
                      "qwen2.5:7b": "qwen2.5:7b",
                      "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct"}


async def test_models_keep_the_last_good_list_while_the_kernel_is_down(tmp_path):
    async with stack(tmp_path, "models: {discover: true}") as s:
        await s.runtime.catalog.refresh()
        s.kernel.stop()
        await s.runtime.catalog.refresh()
        listing = await s.client.get("/models")
    assert "qwen2.5:7b" in [m["id"] for m in listing.json()["data"]]


async def test_failures_in_a_stream_are_never_a_200_event_stream(tmp_path):
    """Everything that can fail before the first byte still gets its own HTTP status for stream: true."""
    async with stack(tmp_path, "retry: {max_retries: 0}") as s:
        bad_json = await s.client.post("/chat/completions", content=b'{"stream": true, "model":',
                                       headers={"content-type": "application/json"})
        no_messages = await s.client.post("/chat/completions",
                                          json={"model": "mock-model", "stream": True, "messages": []})
        s.kernel.script(LLMFailure(429))
        limited = await s.client.post("/chat/completions", json=chat(stream=True))
    for response, status in ((bad_json, 400), (no_messages, 400), (limited, 429)):
        assert_openai_error(response, status)
        assert not response.headers["content-type"].startswith("text/event-stream")
    assert s.kernel.query_count == 1
    assert json.loads(no_messages.text)["error"]["type"] == "invalid_request_error"
