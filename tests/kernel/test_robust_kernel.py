"""Robustness against a failing kernel: every fault ends in a well-formed OpenAI error in bounded time,
and aiosd stays healthy."""

from __future__ import annotations

import asyncio
import logging

import httpx
import openai
import pytest

from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.fake_kernel import (
    Drip,
    FakeKernel,
    Garbage,
    Hang,
    LLMFailure,
    RawResponse,
    ResetMidBody,
)
from tests.support.robust import (
    assert_idle,
    assert_openai_error,
    connections_to,
    eventually,
    other_tasks,
)

# A 0.5 s kernel deadline and at most 4 attempts: every fault reaches the client through aiosd's own
# deadline or retry limit, whatever the kernel does (never through the client's 30 s timeout).
FAST_FAILING = (
    "\n"
    'kernel: {timeout: "500ms", connect_timeout: "1s", queue_timeout: "1s", max_concurrency: 4}\n'
    'retry: {max_retries: 3, on_status: [429], budget: "1s", '
    'backoff: {initial: "10ms", multiplier: 1.0, max: "20ms", jitter: 0.0}}\n'
)
MAX_ATTEMPTS = 4  # FAST_FAILING's max_retries + 1
HELLO = [{"role": "user", "content": "hello"}]

# fault name -> (script items, HTTP status the client gets, OpenAI error code)
FAULTS = {
    "reset_mid_response": ([ResetMidBody()], 502, "kernel_unreachable"),
    "garbage_answer": ([Garbage()], 502, "kernel_bad_answer"),
    "slow_drip": ([Drip(interval=0.2, chunk_size=8)], 504, "kernel_timeout"),
    "hang": ([Hang()], 504, "kernel_timeout"),
    "429_storm": ([LLMFailure(429)] * 50, 429, "rate_limit_exceeded"),
    # json.loads raises RecursionError on it: once a 500 with a traceback.
    "100000_levels_of_json": ([RawResponse(200, b"[" * 100_000 + b"]" * 100_000)], 502, "kernel_bad_answer"),
}
CLIENTS = ["httpx", "openai", "openai_stream"]


async def ask(client_kind: str, aiosd, messages=HELLO):
    """One chat completion with the given client; returns (status, error object or None, text or None)."""
    if client_kind == "httpx":
        async with httpx.AsyncClient(base_url=aiosd.base_url, timeout=30) as client:
            response = await client.post("/chat/completions", json={"model": "sonnet", "messages": messages})
        if response.status_code == 200:
            return 200, None, response.json()["choices"][0]["message"]["content"]
        return response.status_code, assert_openai_error(response, response.status_code), None
    client = openai.AsyncOpenAI(base_url=aiosd.base_url, api_key="unused", max_retries=0, timeout=30)
    try:
        if client_kind == "openai_stream":
            stream = await client.chat.completions.create(model="sonnet", messages=messages, stream=True)
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        else:
            completion = await client.chat.completions.create(model="sonnet", messages=messages)
            text = completion.choices[0].message.content
        return 200, None, text
    except openai.APIStatusError as exc:
        assert isinstance(exc.body, dict), exc.body  # the SDK parsed an OpenAI error object
        assert exc.body["message"] and exc.body["type"] and exc.body["code"]
        assert "Traceback" not in exc.response.text
        return exc.status_code, exc.body, None
    finally:
        await client.close()


@pytest.mark.parametrize("client_kind", CLIENTS)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_kernel_fault_gives_a_well_formed_error_in_bounded_time_and_aiosd_recovers(tmp_path, fault, client_kind):
    items, status, code = FAULTS[fault]
    with FakeKernel() as kernel:
        async with serve_aiosd(config_for(tmp_path, kernel.url, FAST_FAILING)) as aiosd:
            baseline_tasks = set(asyncio.all_tasks())
            kernel.script(*items)

            got_status, error, _ = await ask(client_kind, aiosd)

            # The code says which bound ended it (kernel_timeout: the call deadline), and the
            # kernel saw no more calls than the retry policy allows.
            assert (got_status, error["code"]) == (status, code), error
            assert 1 <= len(kernel.queries) <= MAX_ATTEMPTS, len(kernel.queries)
            if fault == "hang":
                # aiosd gave up on the call and dropped its connection (the kernel's work goes on).
                await kernel.wait_for_disconnects_async(1)
                await kernel.wait_until_async(lambda k: k.in_flight == 0, what="the kernel's HTTP request to end")
            if fault in ("hang", "slow_drip", "reset_mid_response"):
                # A connection that timed out or broke is closed, never put back in the pool.
                await eventually(
                    lambda: connections_to(kernel.port) == 0, what="aiosd closing the broken kernel connection"
                )
            assert_idle(aiosd)

            kernel.clear_script()
            assert await ask(client_kind, aiosd) == (200, None, "echo: hello")
            assert_idle(aiosd)
            await eventually(lambda: not other_tasks(baseline_tasks), what="request tasks finishing")
        assert connections_to(kernel.port) == 0


@pytest.mark.parametrize("client_kind", CLIENTS)
async def test_kernel_refusing_connections_gives_502_then_serving_resumes_when_it_is_back(
    tmp_path, client_kind, caplog
):
    kernel = FakeKernel(port=free_port())  # not started yet: nothing listens on its port
    async with serve_aiosd(config_for(tmp_path, kernel.url, FAST_FAILING)) as aiosd:
        with caplog.at_level(logging.INFO, logger="aiosd"):
            status, error, _ = await ask(client_kind, aiosd)
        assert (status, error["code"]) == (502, "kernel_unreachable")
        assert f"The AIOS kernel at {kernel.url} is unreachable (connection refused)" in error["message"]
        assert_idle(aiosd)
        # Said as such wherever it shows: the log lines about the request, and why aiosd is not ready.
        # Given up at the first refusal (on_status is [429]): no retries, no waits.
        logged = [r.getMessage() for r in caplog.records if r.name.startswith("aiosd")]
        giving_up = f"attempt 1/{MAX_ATTEMPTS} failed (connection refused); giving up"
        assert any(giving_up in line for line in logged), logged
        assert not any("status 0" in line for line in logged), logged
        async with httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503 and "connection refused" in ready.json()["reason"], ready.text
        with kernel:
            assert await ask(client_kind, aiosd) == (200, None, "echo: hello")
            assert_idle(aiosd)


async def test_a_429_storm_across_many_concurrent_clients_ends_in_429s_and_frees_every_slot(tmp_path):
    with FakeKernel() as kernel:
        async with serve_aiosd(config_for(tmp_path, kernel.url, FAST_FAILING)) as aiosd:
            kernel.script(*[LLMFailure(429)] * 10_000)
            async with httpx.AsyncClient(base_url=aiosd.base_url, timeout=30,
                                         limits=httpx.Limits(max_connections=40)) as client:
                responses = await asyncio.gather(*[
                    client.post("/chat/completions", json={"model": "sonnet", "messages": HELLO}) for _ in range(40)
                ])
            assert len(kernel.queries) <= 40 * MAX_ATTEMPTS  # every request stopped at the retry limit
            for response in responses:
                # Either the retries ran out (429) or the queue behind 4 slots did (503): both tell
                # the client to come back later, with Retry-After.
                error = assert_openai_error(response, (429, 503))
                assert error["code"] in ("rate_limit_exceeded", "queue_timeout")
                assert int(response.headers["retry-after"]) >= 1
            assert any(r.status_code == 429 for r in responses)
            assert kernel.max_in_flight <= 4  # the storm never broke through aiosd's concurrency cap
            assert_idle(aiosd)

            kernel.clear_script()
            assert await ask("openai", aiosd) == (200, None, "echo: hello")


async def test_a_hung_kernel_holding_every_slot_makes_later_requests_503_not_hang(tmp_path):
    hang = Hang()
    with FakeKernel() as kernel:
        one_slot = 'kernel: {timeout: "3s", queue_timeout: "200ms", max_concurrency: 1}'
        config = config_for(tmp_path, kernel.url, FAST_FAILING + one_slot)
        async with serve_aiosd(config) as aiosd:
            kernel.script(hang)
            async with httpx.AsyncClient(base_url=aiosd.base_url, timeout=30) as client:
                first = asyncio.create_task(
                    client.post("/chat/completions", json={"model": "sonnet", "messages": HELLO})
                )
                await kernel.wait_for_in_flight_async(1)
                second = await client.post("/chat/completions", json={"model": "sonnet", "messages": HELLO})
                assert not first.done()  # answered by the queue's 200 ms, not after the kernel's 3 s
                error = assert_openai_error(second, 503)
                assert error["code"] == "queue_timeout"
                assert second.headers["retry-after"]
                hang.release()
                assert (await first).status_code == 200
            assert_idle(aiosd)
