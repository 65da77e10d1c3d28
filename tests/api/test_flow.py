"""Flow control through a real aiosd: the concurrency cap, FIFO order, and clients that hang up."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.support.endpoint import chat, stack, wait_for
from tests.support.fake_kernel import Hang, LLMFailure


async def _raw_request(port: int, body: dict) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a chat request on a fresh connection and leave it open (the caller hangs up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(data)}\r\n\r\n".encode() + data
    )
    await writer.drain()
    return reader, writer


def _idle(runtime) -> bool:
    return runtime.scheduler.in_flight == 0 and runtime.scheduler.queued == 0


async def _hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def _disconnected_count(runtime) -> float:
    return runtime.metrics.requests.labels("_unknown", "client_disconnected")._value.get()


async def test_a_client_that_hangs_up_cancels_its_kernel_call(tmp_path):
    async with stack(tmp_path) as s:
        hang = Hang()
        s.kernel.script(hang)
        baseline = set(asyncio.all_tasks())
        _, writer = await _raw_request(s.runtime.config.listen_port, chat("slow"))
        await s.kernel.wait_for_in_flight_async(1)
        assert s.runtime.scheduler.in_flight == 1
        await _hang_up(writer)
        # aiosd hung up on the kernel in turn (the kernel's own work goes on: it cannot be told).
        await s.kernel.wait_for_disconnects_async(1)
        await wait_for(lambda: _idle(s.runtime), what="aiosd's slot being given back")
        await wait_for(lambda: set(asyncio.all_tasks()) <= baseline, what="the request's tasks ending")
        assert _disconnected_count(s.runtime) == 1
        hang.release()
        # The freed slot serves the next request at once.
        assert (await s.client.post("/chat/completions", json=chat("next"))).status_code == 200


async def test_a_client_that_hangs_up_while_queued_gives_up_its_place(tmp_path):
    async with stack(tmp_path, 'kernel: {max_concurrency: 1, queue_timeout: "10s"}') as s:
        hang = Hang()
        s.kernel.script(hang)
        holder = asyncio.create_task(s.client.post("/chat/completions", json=chat("first")))
        await s.kernel.wait_for_in_flight_async(1)
        _, writer = await _raw_request(s.runtime.config.listen_port, chat("queued"))
        await wait_for(lambda: s.runtime.scheduler.queued == 1, what="the second request queueing")
        await _hang_up(writer)
        await wait_for(lambda: s.runtime.scheduler.queued == 0, what="the queue place being given up")
        hang.release()
        assert (await holder).status_code == 200
        await wait_for(lambda: _idle(s.runtime), what="the slot coming back")
    # The request that left never reached the kernel.
    assert [q["query_data"]["messages"][-1]["content"] for q in s.kernel.queries] == ["first"]


async def test_a_client_that_hangs_up_during_a_retry_wait_ends_the_request(tmp_path):
    extra = 'retry: {budget: "60s", backoff: {initial: "30s", max: "30s"}}'
    async with stack(tmp_path, extra) as s:
        s.kernel.script(LLMFailure(429))
        baseline = set(asyncio.all_tasks())
        _, writer = await _raw_request(s.runtime.config.listen_port, chat("limited"))
        await wait_for(lambda: len(s.runtime.retry_times) == 1, what="the first attempt failing with 429")
        assert _idle(s.runtime)  # a request waiting to retry holds no kernel slot
        await _hang_up(writer)
        # Well before the 30 s wait would end, the request is gone.
        await wait_for(lambda: _disconnected_count(s.runtime) == 1, what="the request ending")
        await wait_for(lambda: set(asyncio.all_tasks()) <= baseline, what="the request's tasks ending")
    assert s.kernel.query_count == 1


async def _send_in_order(s, count: int) -> list[asyncio.Task]:
    """Start ``count`` requests, each only once the one before is inside aiosd (arrival order is known)."""
    tasks = []
    admission = s.runtime.scheduler
    for number in range(count):
        tasks.append(asyncio.create_task(s.client.post("/chat/completions", json=chat(f"request {number}"))))
        arrived = number + 1
        await wait_for(lambda arrived=arrived: admission.in_flight + admission.queued == arrived,
                       what=f"request {number} arriving")
    return tasks


async def test_twenty_parallel_requests_never_exceed_the_cap(tmp_path):
    async with stack(tmp_path, 'kernel: {max_concurrency: 4}', limits=httpx.Limits(max_connections=40)) as s:
        hang = Hang()
        s.kernel.script(*[hang] * 20)
        tasks = await _send_in_order(s, 20)
        await s.kernel.wait_for_in_flight_async(4)
        assert (s.runtime.scheduler.in_flight, s.runtime.scheduler.queued) == (4, 16)
        hang.release()
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200] * 20
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    assert answers == [f"echo: request {n}" for n in range(20)]
    assert s.kernel.max_in_flight == 4
    assert _idle(s.runtime)
    # Arrival order is kept: a request reaches the kernel at most (cap - 1) places from its turn.
    order = [int(q["query_data"]["messages"][-1]["content"].split()[-1]) for q in s.kernel.queries]
    assert sorted(order) == list(range(20))
    assert all(abs(position - number) < 4 for position, number in enumerate(order)), order


async def test_queued_requests_reach_the_kernel_in_arrival_order(tmp_path):
    async with stack(tmp_path, 'kernel: {max_concurrency: 1}', limits=httpx.Limits(max_connections=40)) as s:
        hang = Hang()
        s.kernel.script(hang)
        tasks = await _send_in_order(s, 20)
        hang.release()
        await asyncio.gather(*tasks)
    order = [q["query_data"]["messages"][-1]["content"] for q in s.kernel.queries]
    assert order == [f"request {n}" for n in range(20)]
    assert s.kernel.max_in_flight == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_a_full_queue_answers_503_with_retry_after(tmp_path, stream):
    async with stack(tmp_path, 'kernel: {max_concurrency: 1, queue_timeout: "200ms"}') as s:
        hang = Hang()
        s.kernel.script(hang)
        holder = asyncio.create_task(s.client.post("/chat/completions", json=chat("first")))
        await s.kernel.wait_for_in_flight_async(1)
        response = await s.client.post("/chat/completions", json=chat("second", stream=stream))
        hang.release()
        await holder
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_timeout"
    assert int(response.headers["retry-after"]) >= 1
    assert s.kernel.query_count == 1
