"""GET /status against a real aiosd: what an operator reads, a refused reload, load, and request ids."""

from __future__ import annotations

import asyncio
import logging

import httpx

from aiosd import __version__
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel, Hang, LLMFailure, Text
from tests.support.observability import attach_daemon

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}


async def test_status_shows_a_refused_reload_and_keeps_serving_the_last_good_config(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url)
        async with serve_aiosd(config) as aiosd:
            daemon = await attach_daemon(aiosd)
            good_text = config.source_path.read_text()
            config.source_path.write_text(good_text.replace('timeout: 5s', 'timeout: "soon"', 1))
            outcome = await daemon.reload("file changed")
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                status = (await client.get("/status")).json()
                served = await client.post("/v1/chat/completions", json=CHAT)
                metrics = (await client.get("/metrics")).text

                config.source_path.write_text(good_text)
                await daemon.reload("SIGHUP", force=True)
                after = (await client.get("/status")).json()
    assert outcome.ok is False
    reload = status["config"]["last_reload"]
    assert reload["ok"] is False and reload["reason"] == "file changed"
    assert any("kernel.timeout" in p for p in reload["problems"])
    assert status["config"]["generation"] == 1
    assert served.status_code == 200  # the last good config still serves
    assert 'aiosd_config_reloads_total{result="refused"} 1.0' in metrics
    assert 'aiosd_config_reloads_total{result="ok"} 0.0' in metrics
    assert after["config"]["generation"] == 2
    assert after["config"]["last_reload"]["ok"] is True and after["config"]["last_reload"]["problems"] == []
    assert aiosd.runtime.status_line().startswith("gen 2;")


async def test_status_reports_version_config_models_kernel_and_sync(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, "models: {discover: true}", openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await asyncio.wait_for(aiosd.runtime.wait_for_sync(0), 5)
            async with httpx.AsyncClient(base_url=aiosd.url) as client:
                assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
                status = (await client.get("/status")).json()
    assert status["version"] == __version__
    assert status["uptime_seconds"] >= 0
    assert status["config"]["path"] == str(config.source_path)
    assert status["config"]["generation"] == 1
    assert status["config"]["listen"] == config.listen
    sources = {m["id"]: m["source"] for m in status["models"]}
    assert sources["sonnet"] == "map"
    assert {sources[m["name"]] for m in kernel.models} == {"discovery"}
    assert status["model_refresh"]["ok"] is True
    assert status["kernel"]["url"] == kernel.url and status["kernel"]["ready"] is True
    assert status["kernel"]["recent_latency_seconds"]["count"] == 1
    assert status["kernel"]["recent_latency_seconds"]["last"] > 0
    assert status["kernel"]["last_failure"] is None
    assert status["kernel"]["canary"]["enabled"] is False
    assert status["openclaw_sync"]["outcome"] == "created"
    assert status["openclaw_sync"]["path"] == str(tmp_path / "openclaw" / "openclaw.json")


async def test_status_counts_calls_in_flight_queued_and_recent_retries(tmp_path):
    with FakeKernel() as kernel:
        hang = Hang()
        kernel.script(LLMFailure(429), Text("after a retry"), hang)
        config = config_for(tmp_path, kernel.url, "kernel: {max_concurrency: 1}")
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            retried = await client.post("/v1/chat/completions", json=CHAT)
            assert retried.headers["x-aiosd-attempts"] == "2"
            held = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            await kernel.wait_for_in_flight_async(1)
            waiting = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            while aiosd.runtime.scheduler.queued == 0:  # the second request reaching aiosd's queue
                await asyncio.sleep(0.005)
            busy = (await client.get("/status")).json()["calls"]
            hang.release()
            assert (await held).status_code == 200 and (await waiting).status_code == 200
            idle = (await client.get("/status")).json()["calls"]
    assert busy == {"in_flight": 1, "queued": 1, "max_concurrency": 1, "retries_last_5m": 1, "slots_out": 0, "out": []}
    assert idle["in_flight"] == 0 and idle["queued"] == 0


async def test_status_needs_the_api_key_when_auth_is_on(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'auth: {keys: ["sk-test-0123456789"]}')
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            refused = await client.get("/status")
            allowed = await client.get("/status", headers={"authorization": "Bearer sk-test-0123456789"})
            # Liveness carries nothing: it stays open. Readiness and metrics name kernels, keys and models:
            # they need the key too (issue 18 item 9; server.open_metrics: loopback opens them to loopback).
            open_ = [(await client.get(path)).status_code for path in ("/healthz", "/readyz", "/metrics")]
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200
    assert "sk-test" not in allowed.text
    assert open_ == [200, 401, 401]


async def test_every_operational_response_carries_a_request_id_and_its_log_line_does_too(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="aiosd")
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'auth: {keys: ["sk-test-0123456789"]}')
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            responses = [await client.get(path) for path in ("/healthz", "/readyz", "/metrics", "/status", "/nope")]
            echoed = await client.get("/healthz", headers={"x-request-id": "probe-42"})
            unsafe = await client.get("/healthz", headers={"x-request-id": "bad id\twith tab"})
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
    assert echoed.headers["x-request-id"] == "probe-42"
    assert unsafe.headers["x-request-id"].startswith("req_")  # an unsafe id is replaced, not logged
    # /readyz, /metrics and /status answer 401 here: the first refusal is logged, the next ones within
    # the interval are counted (issue 18 item 10).
    refused_id = responses[1].headers["x-request-id"]
    lines = [r.getMessage() for r in caplog.records if refused_id in r.getMessage()]
    assert len(lines) == 1 and "401" in lines[0] and "sk-test" not in lines[0]
