"""/healthz and /readyz against a real aiosd and the fake kernel: dying, returning, silence, and the canary."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import httpx

from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.fake_kernel import FakeKernel, LLMFailure

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}


async def readyz_turns(client: httpx.AsyncClient, status: int, *, timeout: float = 5.0) -> dict:
    """Poll /readyz until it answers ``status``. Polling, because what flips it here is time
    (ready_window running out, a background refresh or canary), not an event a test can await."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == status:
            return response.json()
        if loop.time() > deadline:
            raise AssertionError(f"/readyz still {response.status_code} after {timeout}s: {response.json()}")
        await asyncio.sleep(0.02)


async def logged(caplog, start: str, *, timeout: float = 5.0) -> None:
    """Wait until a log line starting with ``start`` was written."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(r.getMessage().startswith(start) for r in caplog.records):
        if loop.time() > deadline:
            raise AssertionError(f"nothing logged starting with {start!r} after {timeout}s")
        await asyncio.sleep(0.02)


async def test_healthz_is_200_without_any_kernel_call(tmp_path):
    dead_kernel = f"http://127.0.0.1:{free_port()}"
    async with serve_aiosd(config_for(tmp_path, dead_kernel)) as aiosd:
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        # Liveness touched nothing: the kernel client never tried the (dead) kernel.
        assert aiosd.runtime.kernel.last_failure_at is None


async def test_readyz_is_503_with_a_reason_before_the_kernel_ever_answered(tmp_path):
    with FakeKernel() as kernel:
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reason": f"the kernel at {kernel.url} has not answered yet"}


async def test_readyz_before_any_answer_says_what_the_last_try_met(tmp_path):
    dead_kernel = f"http://127.0.0.1:{free_port()}"
    config = config_for(tmp_path, dead_kernel, "models: {discover: true}")
    async with serve_aiosd(config) as aiosd:
        await aiosd.runtime.catalog.first_refresh_done(5)
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    reason = response.json()["reason"]
    assert reason.startswith(f"the kernel at {dead_kernel} has not answered yet (last try ")
    assert "unreachable" in reason


async def test_readiness_follows_forwarded_calls_as_the_kernel_dies_and_returns(tmp_path):
    kernel = FakeKernel().start()
    try:
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert (await client.get("/readyz")).json() == {"ready": True, "reason": "ok"}

            port = kernel.port
            kernel.stop()
            failed = await client.post("/v1/chat/completions", json=CHAT)
            assert failed.status_code == 502
            # At once, not after ready_window (5 minutes here): the failed call is newer than any answer.
            response = await client.get("/readyz")
            assert response.status_code == 503
            reason = response.json()["reason"]
            assert reason.startswith(f"the kernel at {kernel.url} failed ")
            assert "unreachable" in reason and "last answer" in reason

            kernel = FakeKernel(port=port).start()
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
    finally:
        kernel.stop()


async def test_readiness_follows_the_model_list_refresh_alone(tmp_path):
    kernel = FakeKernel().start()
    try:
        config = config_for(tmp_path, kernel.url, 'models: {discover: true, refresh_interval: "50ms"}')
        async with serve_aiosd(config) as aiosd:
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                await readyz_turns(client, 200)
                port = kernel.port
                kernel.stop()
                down = await readyz_turns(client, 503)
                assert "unreachable" in down["reason"]
                kernel = FakeKernel(port=port).start()
                await readyz_turns(client, 200)
            assert kernel.query_count == 0  # no /query was needed: the refresh is proof enough
    finally:
        kernel.stop()


async def test_a_kernel_that_answers_the_list_but_says_not_ready_is_not_ready(tmp_path):
    with FakeKernel(llm_core_ready=False) as kernel:
        config = config_for(tmp_path, kernel.url, "models: {discover: true}")
        async with serve_aiosd(config) as aiosd:
            await aiosd.runtime.catalog.first_refresh_done(5)
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                response = await client.get("/readyz")
    assert response.status_code == 503
    assert "not ready to list its models" in response.json()["reason"]


async def test_readiness_expires_when_the_kernel_has_been_silent_longer_than_ready_window(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="aiosd.runtime")
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'kernel: {ready_window: "300ms"}')
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            expired = await readyz_turns(client, 503)
            # The health loop logs the turn as it sees it (reading /readyz logs nothing).
            await logged(caplog, "kernel not ready")
            await client.get("/readyz")  # asked again: no second log line for the same state
    assert "has not answered for" in expired["reason"] and "(ready_window 0.3s)" in expired["reason"]
    changes = [r.getMessage() for r in caplog.records if r.name == "aiosd.runtime" and "kernel" in r.getMessage()]
    assert changes[0].startswith("kernel ready")
    assert len([m for m in changes if m.startswith("kernel not ready")]) == 1


# --- the canary ---------------------------------------------------------------------------------


async def test_the_canary_proves_an_idle_kernel_ready(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'kernel: {probe_interval: "100ms"}')
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            await kernel.wait_for_queries_async(1)
            await readyz_turns(client, 200)
            status = (await client.get("/status")).json()["kernel"]["canary"]
    canary = kernel.queries[0]["query_data"]
    assert canary["messages"] == [{"role": "user", "content": "Reply with the single word: ok"}]
    assert canary["llms"] == [{"name": "gpt-4o-mini"}]  # the first exposed model's kernel model
    assert canary["tools"] == []
    assert status["enabled"] is True and status["sent"] >= 1 and status["last"]["answered"] is True


async def test_the_canary_is_off_by_default_and_a_reload_turns_it_on(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url)
        async with serve_aiosd(config) as aiosd:
            # Absence can only be shown by letting time pass: several would-be intervals of 100 ms.
            await asyncio.sleep(0.4)
            assert kernel.query_count == 0
            assert aiosd.runtime.canary.sent == 0
            probing = dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, probe_interval=0.1))
            await aiosd.runtime.apply(probing)
            await kernel.wait_for_queries_async(1)


async def test_a_canary_answered_with_an_error_inside_http_200_still_proves_the_scheduler(tmp_path):
    with FakeKernel() as kernel:
        kernel.script(LLMFailure(429, "rate limited"))
        config = config_for(tmp_path, kernel.url, 'kernel: {probe_interval: "100ms"}')
        async with serve_aiosd(config) as aiosd:
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                await readyz_turns(client, 200)
            assert aiosd.runtime.canary.sent == 1  # the rate-limited one did it: nothing after it was needed yet
            assert aiosd.runtime.canary.last_answered is True
            assert "rate limited" in aiosd.runtime.canary.last_message


async def test_an_unreachable_canary_proves_nothing(tmp_path):
    dead_kernel = f"http://127.0.0.1:{free_port()}"
    async with serve_aiosd(config_for(tmp_path, dead_kernel, 'kernel: {probe_interval: "50ms"}')) as aiosd:
        runtime = aiosd.runtime
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while runtime.canary.sent < 2 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            response = await client.get("/readyz")
    assert runtime.canary.sent >= 2 and runtime.canary.last_answered is False
    assert response.status_code == 503 and "unreachable" in response.json()["reason"]


async def test_a_dead_scheduler_makes_aiosd_unready_though_the_kernel_status_says_ok(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'kernel: {probe_interval: "100ms", ready_window: "500ms"}')
        async with serve_aiosd(config) as aiosd:
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                await readyz_turns(client, 200)
                kernel.scheduler_dead = True
                await kernel.wait_for_in_flight_async(1)  # the next canary hangs in the kernel
                hung_at = kernel.query_count
                down = await readyz_turns(client, 503)
                kernel_status = httpx.get(f"{kernel.url}/status").json()
                status = (await client.get("/status")).json()["kernel"]["canary"]
            # Several intervals passed while the canary hung: still only that one in flight.
            assert kernel.query_count == hung_at
            assert kernel.max_in_flight == 1
    assert kernel_status["status"] == "ok"  # why aiosd never asks the kernel's /status
    assert "has not answered for" in down["reason"] and "a canary /query has been waiting" in down["reason"]
    assert status["in_flight_seconds"] > 0.4


async def test_a_password_in_kernel_url_is_never_shown(tmp_path, caplog):
    """/readyz is unauthenticated: a kernel URL's user:password must not reach it, /status or the log."""
    dead_kernel = f"http://alice:s3cret-pw@127.0.0.1:{free_port()}"
    config = config_for(tmp_path, dead_kernel, "models: {discover: true}")
    caplog.set_level(logging.DEBUG)
    async with serve_aiosd(config) as aiosd:
        await aiosd.runtime.catalog.first_refresh_done(5)
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            readyz = (await client.get("/readyz")).text
            status = (await client.get("/status")).text
            chat = (await client.post("/v1/chat/completions", json=CHAT)).text
    assert "***@127.0.0.1" in readyz
    for shown in (readyz, status, chat, caplog.text):
        assert "s3cret-pw" not in shown and "alice" not in shown
