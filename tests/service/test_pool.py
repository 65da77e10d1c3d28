"""A pool of fake kernels behind a real aiosd: failover, ejection and rejoin, per-kernel model lists, reloads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import httpx

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel, LLMFailure

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}


def pool_yaml(*kernels: FakeKernel, slots: int = 4, extra: str = "") -> str:
    names = "\n".join(f'  - {{url: "{k.url}", name: k{i}, max_concurrency: {slots}}}' for i, k in enumerate(kernels))
    return f"kernels:\n{names}\n{extra}"


@contextlib.contextmanager
def kernels(n: int, **options):
    started = [FakeKernel(**options).start() for _ in range(n)]
    try:
        yield started
    finally:
        for kernel in started:
            kernel.stop()


async def test_a_429_on_one_kernel_is_served_by_another_at_once(tmp_path, caplog):
    with kernels(2) as (k0, k1):
        k0.script(LLMFailure(429, "quota"))
        config = config_for(tmp_path, k0.url, pool_yaml(k0, k1))
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            with caplog.at_level(logging.INFO):
                response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-aiosd-attempts"] == "2"
    assert response.headers["x-aiosd-kernels"] == "k0,k1"
    assert k0.query_count == 1 and k1.query_count == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any("kernel k0 failed" in line and "failing over" in line for line in lines)
    assert any("2 attempts on k0,k1" in line for line in lines)


async def test_a_hanging_kernel_fails_over_within_the_deadline(tmp_path):
    with kernels(2) as (k0, k1):
        k0.llm_latency = 30  # every call on k0 hangs far past kernel.timeout
        config = config_for(tmp_path, k0.url, pool_yaml(k0, k1) + "kernel: {timeout: 300ms}")
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-aiosd-kernels"] == "k0,k1"


async def test_a_kernel_without_the_model_is_never_chosen(tmp_path):
    other = [{"name": "something-else", "backend": "openai"}]
    with FakeKernel(models=other) as lacking, FakeKernel() as serving:
        config = config_for(tmp_path, lacking.url, pool_yaml(lacking, serving))
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            await aiosd.runtime.pool.list_llms()  # the health loop's first listing, done now
            answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(12)))
            status = (await client.get("/status")).json()
    assert [r.status_code for r in answers] == [200] * 12
    assert lacking.query_count == 0 and serving.query_count == 12
    assert {k["name"]: k["models"] for k in status["kernels"]}["k0"] == ["something-else"]


async def test_a_kernel_killed_under_traffic_is_ejected_and_rejoins_when_back_and_no_request_fails(tmp_path):
    with kernels(2) as (k0, k1):
        extra = 'health: {consecutive_failures: 1, base_ejection: 200ms, max_ejection: 1s}\nmodels: {discover: true}'
        config = config_for(tmp_path, k0.url, pool_yaml(k0, k1, extra=extra))
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            victim = aiosd.runtime.pool.members["k0"]
            statuses: list[int] = []
            stop = asyncio.Event()

            async def traffic() -> None:
                while not stop.is_set():
                    statuses.append((await client.post("/v1/chat/completions", json=CHAT)).status_code)

            workers = [asyncio.create_task(traffic()) for _ in range(4)]
            await k0.wait_for_queries_async(2)
            port = k0.port
            k0.stop()
            await _until(lambda: victim.health.ejected, "k0 to be ejected")
            during = len(statuses)
            await _until(lambda: len(statuses) > during + 8, "traffic to go on without k0")
            revived = FakeKernel(port=port).start()
            try:
                await _until(lambda: not victim.health.ejected, "k0 to rejoin", timeout=10)
                await revived.wait_for_queries_async(1, timeout=10)  # it takes work again
            finally:
                stop.set()
                await asyncio.gather(*workers)
                revived.stop()
            ready = (await client.get("/readyz")).status_code
    assert statuses and set(statuses) == {200}
    assert victim.health.ejections_total >= 1
    assert ready == 200


async def test_readyz_stays_ready_while_one_kernel_is(tmp_path):
    with kernels(2) as (k0, k1):
        config = config_for(tmp_path, k0.url, pool_yaml(k0, k1))
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            await aiosd.runtime.pool.list_llms()
            assert (await client.get("/readyz")).status_code == 200
            k0.stop()
            await client.post("/v1/chat/completions", json=CHAT)  # may hit k0, fails over to k1
            await aiosd.runtime.pool.list_llms()  # k0 fails its listing now
            answer = await client.get("/readyz")
            k1.stop()
            with contextlib.suppress(Exception):
                await aiosd.runtime.pool.list_llms()
            none = await client.get("/readyz")
    assert answer.status_code == 200 and "1 of 2 kernels ready" in answer.json()["reason"]
    assert none.status_code == 503 and "none of the 2 kernels" in none.json()["reason"]


async def test_a_reload_adding_and_removing_kernels_under_traffic_loses_nothing(tmp_path):
    with kernels(3, llm_latency=0.05) as (k0, k1, k2):
        config = config_for(tmp_path, k0.url, pool_yaml(k0, k1, slots=2))
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            requests = [asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(30)]
            await k0.wait_for_in_flight_async(2)
            # k0 leaves with 2 calls in flight, k2 joins; the waiting requests move to k1 and k2.
            new = config_for(tmp_path, k1.url, pool_yaml(k1, k2, slots=2).replace("name: k0", "name: k0"))
            new = dataclasses.replace(new, kernels=tuple(
                dataclasses.replace(item, name=name) for item, name in zip(new.kernels, ("k1", "k2"), strict=True)))
            await aiosd.runtime.apply(new)
            answers = await asyncio.gather(*requests)
            after = k0.query_count
            more = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(6)))
            names = [m.name for m in aiosd.runtime.pool]
    assert [r.status_code for r in answers + more] == [200] * 36
    assert names == ["k1", "k2"]
    assert k2.query_count > 0 and k0.query_count == after  # nothing new went to the removed kernel
    assert sum(k.query_count for k in (k0, k1, k2)) == 36


async def _until(predicate, what: str, timeout: float = 5.0) -> None:
    """Poll ``predicate``: what flips it here is a kernel process dying or coming back, not an awaitable event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_keys_limits_answer_429_with_retry_after_and_its_name_reaches_the_kernel(tmp_path):
    from tests.support.fake_kernel import Hang

    extra = """
auth:
  keys:
    - {key: "user-key-123", name: user}
    - {key: "cron-key-123", name: cron, priority: background, max_in_flight: 1, max_queued: 1}
kernel: {agent_name_per_key: true}
"""
    with FakeKernel() as kernel:
        hang = Hang()
        kernel.script(hang)
        config = config_for(tmp_path, kernel.url, extra)
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            cron = {"authorization": "Bearer cron-key-123"}
            first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT, headers=cron))
            await kernel.wait_for_in_flight_async(1)
            second = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT, headers=cron))
            await _until(lambda: aiosd.runtime.scheduler.queued == 1, "cron's second request to queue")
            refused = await client.post("/v1/chat/completions", json=CHAT, headers=cron)
            # The user's key is not held back by cron's limits: slots are free.
            user = await client.post("/v1/chat/completions", json=CHAT,
                                     headers={"authorization": "Bearer user-key-123"})
            hang.release()
            answers = await asyncio.gather(first, second)
            status = (await client.get("/status", headers=cron)).json()
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "max_queued (1)" in refused.json()["error"]["message"] and "'cron'" in refused.json()["error"]["message"]
    assert user.status_code == 200 and [a.status_code for a in answers] == [200, 200]
    agents = [q["agent_name"] for q in kernel.queries]
    assert agents[0] == "openclaw.cron" and "openclaw.user" in agents
    classes = {c["class"]: {k["key"]: k for k in c["keys"]} for c in status["classes"]}
    assert classes["background"]["cron"]["rejected"] == 1 and classes["background"]["cron"]["admitted"] == 2
    assert classes["interactive"]["user"]["admitted"] == 1


async def test_with_the_slots_full_of_background_work_an_interactive_request_starts_at_the_next_free_slot(tmp_path):
    from tests.support.fake_kernel import Hang

    # One client (no keys), so fair share across keys cannot be what puts the interactive turn first:
    # its class comes from the model (OpenClaw's heartbeat model pointed at a background alias).
    extra = """
models:
  map:
    heartbeat: {kernel_model: "gpt-4o-mini", priority: background}
kernel: {max_concurrency: 2}
"""

    def turn(text: str, model: str = "heartbeat") -> dict:
        return {"model": model, "messages": [{"role": "user", "content": text}]}

    with FakeKernel() as kernel:
        hangs = [Hang(), Hang()]
        kernel.script(*hangs)
        config = config_for(tmp_path, kernel.url, extra)
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            background = [asyncio.create_task(client.post("/v1/chat/completions", json=turn(f"background {i}")))
                          for i in range(6)]
            await kernel.wait_for_in_flight_async(2)
            await _until(lambda: aiosd.runtime.scheduler.queued == 4, "four background requests to queue")
            user = asyncio.create_task(client.post("/v1/chat/completions", json=turn("interactive", "sonnet")))
            await _until(lambda: aiosd.runtime.scheduler.queued == 5, "the interactive request to queue")
            hangs[0].release()
            await kernel.wait_for_queries_async(3)
            hangs[1].release()
            answers = await asyncio.gather(user, *background)
            metrics = (await client.get("/metrics")).text
    assert [a.status_code for a in answers] == [200] * 7
    third = kernel.queries[2]["query_data"]["messages"][-1]["content"]
    assert "interactive" in third  # the first slot that freed went to it, ahead of 4 older background turns
    assert 'aiosd_scheduler_admitted_total{class="background",key="anonymous"} 6.0' in metrics
    assert 'aiosd_scheduler_admitted_total{class="interactive",key="anonymous"} 1.0' in metrics
    assert 'aiosd_pool_kernel_calls_total{kernel="127.0.0.1:' in metrics


async def test_the_priority_header_lowers_a_requests_class_and_never_raises_it(tmp_path):
    extra = """
auth:
  keys:
    - {key: "user-key-123", name: user}
    - {key: "cron-key-123", name: cron, priority: background}
"""
    with FakeKernel() as kernel:
        async with serve_aiosd(config_for(tmp_path, kernel.url, extra)) as aiosd, \
                httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            lowered = await client.post("/v1/chat/completions", json=CHAT, headers={
                "authorization": "Bearer user-key-123", "x-aiosd-priority": "background"})
            not_raised = await client.post("/v1/chat/completions", json=CHAT, headers={
                "authorization": "Bearer cron-key-123", "x-aiosd-priority": "interactive"})
            status = (await client.get("/status", headers={"authorization": "Bearer user-key-123"})).json()
    assert lowered.status_code == not_raised.status_code == 200
    classes = {c["class"]: [k["key"] for k in c["keys"]] for c in status["classes"]}
    assert classes == {"interactive": [], "background": ["cron", "user"]}
