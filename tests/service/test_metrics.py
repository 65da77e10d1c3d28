"""GET /metrics against a real aiosd: values that move with requests, retries, reloads and syncs; bounded labels."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel, Hang, LLMFailure, Text

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


async def test_requests_and_their_durations_are_counted_by_model_and_outcome(tmp_path):
    with FakeKernel() as kernel:
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            before = await scrape(client)
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-5"})).status_code == 404
            kernel.script(LLMFailure(400))
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 400
            after = await scrape(client)
    assert ("aiosd_requests_total", frozenset({("model", "sonnet"), ("outcome", "ok")})) not in before
    assert value(after, "aiosd_requests_total", model="sonnet", outcome="ok") == 1
    assert value(after, "aiosd_requests_total", model="_unknown", outcome="unknown_model") == 1
    assert value(after, "aiosd_requests_total", model="sonnet", outcome="kernel_error") == 1
    assert value(after, "aiosd_request_duration_seconds_count", model="sonnet") == 2
    assert value(after, "aiosd_kernel_call_duration_seconds_count", result="ok") == 1
    assert value(after, "aiosd_kernel_call_duration_seconds_count", result="4xx") == 1
    assert value(after, "aiosd_kernel_call_duration_seconds_sum", result="ok") > 0
    assert value(after, "aiosd_queue_wait_seconds_count") == 2
    assert value(after, "aiosd_overhead_seconds_count") == 1
    whole = value(after, "aiosd_request_duration_seconds_sum", model="sonnet")
    assert value(after, "aiosd_overhead_seconds_sum") < whole


async def test_retries_and_their_waits_are_counted_by_status_class(tmp_path):
    with FakeKernel() as kernel:
        kernel.script(LLMFailure(429), LLMFailure(429), Text("third time"))
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            response = await client.post("/v1/chat/completions", json=CHAT)
            samples = await scrape(client)
    assert response.status_code == 200 and response.headers["x-aiosd-attempts"] == "3"
    assert value(samples, "aiosd_retries_total", status_class="429") == 2
    assert value(samples, "aiosd_retry_wait_seconds_total") >= 0.02  # two backoffs of 10 ms
    assert value(samples, "aiosd_kernel_call_duration_seconds_count", result="429") == 2
    assert value(samples, "aiosd_requests_total", model="sonnet", outcome="ok") == 1


async def test_in_flight_and_queued_gauges_follow_the_kernel_slots(tmp_path):
    with FakeKernel() as kernel:
        hang = Hang()
        kernel.script(hang)
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url, "kernel: {max_concurrency: 1}")) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            held = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            await kernel.wait_for_in_flight_async(1)
            waiting = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            while aiosd.runtime.scheduler.queued == 0:
                await asyncio.sleep(0.005)
            busy = await scrape(client)
            hang.release()
            await asyncio.gather(held, waiting)
            idle = await scrape(client)
    assert value(busy, "aiosd_kernel_calls_in_flight") == 1
    assert value(busy, "aiosd_kernel_calls_queued") == 1
    assert value(idle, "aiosd_kernel_calls_in_flight") == 0
    assert value(idle, "aiosd_kernel_calls_queued") == 0
    assert value(idle, "aiosd_queue_wait_seconds_count") == 2
    assert value(idle, "aiosd_queue_wait_seconds_sum") > 0  # the second one waited for the first


async def test_reloads_syncs_readiness_and_models_are_exported(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, "models: {discover: true}", openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await asyncio.wait_for(aiosd.runtime.wait_for_sync(0), 5)
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                first = await scrape(client)
                done = aiosd.runtime.syncs_done
                await aiosd.runtime.apply(dataclasses.replace(config, log_level="debug"))
                await asyncio.wait_for(aiosd.runtime.wait_for_sync(done), 5)
                second = await scrape(client)
    assert value(first, "aiosd_openclaw_syncs_total", result="created") == 1
    assert value(first, "aiosd_openclaw_syncs_total", result="refused") == 0  # closed set, there from the start
    assert value(first, "aiosd_config_reloads_total", result="ok") == 0
    assert value(first, "aiosd_models_exposed") == 1 + len(kernel.models)
    assert value(first, "aiosd_kernel_ready") == 1  # the model-list refresh answered
    assert value(second, "aiosd_config_reloads_total", result="ok") == 1
    assert value(second, "aiosd_openclaw_syncs_total", result="unchanged") == 1


async def test_canaries_are_counted_by_result(tmp_path):
    with FakeKernel() as kernel:
        kernel.script(LLMFailure(429))
        async with serve_aiosd(config_for(tmp_path, kernel.url, 'kernel: {probe_interval: "50ms"}')) as aiosd:
            await kernel.wait_for_queries_async(1)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while aiosd.runtime.canary.last_at is None and loop.time() < deadline:
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                samples = await scrape(client)
    assert value(samples, "aiosd_canary_queries_total", result="answered") >= 1
    assert value(samples, "aiosd_canary_queries_total", result="failed") == 0


async def test_thousands_of_unknown_model_ids_add_no_series(tmp_path):
    with FakeKernel() as kernel:
        async with serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd:
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=aiosd.url, limits=limits) as client:
                assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "warm-up"})).status_code == 404
                before = await scrape(client)
                gate = asyncio.Semaphore(32)

                async def unknown(i: int) -> int:
                    async with gate:
                        body = {**CHAT, "model": f"attacker-model-{i}"}
                        return (await client.post("/v1/chat/completions", json=body)).status_code

                codes = await asyncio.gather(*(unknown(i) for i in range(2000)))
                after = await scrape(client)
    assert set(codes) == {404}
    assert set(after) == set(before)  # the same series, only their values moved
    assert value(after, "aiosd_requests_total", model="_unknown", outcome="unknown_model") == 2001
    models = {dict(labels).get("model") for _, labels in after} - {None}
    assert models == {"_unknown"}
    assert kernel.query_count == 0
