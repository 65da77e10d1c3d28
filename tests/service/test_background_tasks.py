"""Background loops survive anything: a model list aiosd cannot read, an unexpected exception, a loop that dies."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import httpx
import pytest

import aiosd.models.catalog as model_catalog
import aiosd.service.tasks as tasks
from aiosd.errors import KernelUnreachable
from aiosd.models.catalog import ModelCatalog
from aiosd.service.tasks import TaskSupervisor
from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.daemon_process import close_daemon, daemon_config, start_daemon
from tests.support.endpoint import wait_for
from tests.support.fake_kernel import FakeKernel
from tests.support.model_catalog import FakeLister, ids, model_settings

# 100,000 levels: json.loads raises RecursionError, which is no ValueError.
NESTED = b'{"status": "success", "llms": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
FAST_REFRESH = 'models: {discover: true, refresh_interval: "50ms"}'


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(model_catalog, "FAILED_REFRESH_RETRY", 0.05)
    monkeypatch.setattr(tasks, "FIRST_DELAY", 0.0)


async def test_an_unexpected_exception_in_a_refresh_is_reported_and_the_last_good_list_kept(caplog):
    lister = FakeLister([{"name": "alpha", "backend": None}])
    catalog = ModelCatalog(model_settings(), lister)
    await catalog.refresh()
    lister.error = KeyError("boom\r\n\x1b[2Jforged line")
    with caplog.at_level(logging.WARNING, logger="aiosd.models"):
        first = await catalog.refresh()
        await catalog.refresh()  # the same failure again: not logged again
    assert not first.ok and "unexpected KeyError" in first.message
    assert ids(catalog) == ["alpha"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping the last good list (1 models)" in errors[0].getMessage()
    assert "\r" not in errors[0].getMessage() and "\x1b" not in errors[0].getMessage()
    # A different kind of failure is news again; then the list comes back.
    lister.error = KernelUnreachable("down", kernel_status=0)
    with caplog.at_level(logging.WARNING, logger="aiosd.models"):
        await catalog.refresh()
    assert len(caplog.records) == 2
    lister.error, lister.models = None, [{"name": "beta", "backend": None}]
    assert (await catalog.refresh()).ok and ids(catalog) == ["beta"]


async def test_a_nested_json_model_list_is_reported_and_the_refresh_loop_goes_on(tmp_path, fast_retries, caplog):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, FAST_REFRESH)
        async with serve_aiosd(config) as aiosd:
            runtime = aiosd.runtime
            await runtime.catalog.first_refresh_done(5)
            before = [m.id for m in runtime.catalog.models()]
            version = runtime.catalog.version
            with caplog.at_level(logging.WARNING):
                kernel.list_body = NESTED
                await wait_for(lambda: runtime.catalog.last_refresh is not None and not runtime.catalog.last_refresh.ok)
                async with httpx.AsyncClient(base_url=aiosd.url) as client:
                    status = (await client.get("/status")).json()
                    ready = await client.get("/readyz")
                    listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            assert listed == before  # the last good list
            assert status["model_refresh"]["ok"] is False and status["model_refresh"]["message"]
            assert ready.status_code == 503 and status["kernel"]["ready"] is False
            assert any("could not refresh the kernel's model list" in r.getMessage() for r in caplog.records)
            # The loop is alive: a model the kernel starts listing appears without anyone asking.
            kernel.list_body = None
            kernel.models.append({"name": "new-model", "backend": "openai"})
            await asyncio.wait_for(runtime.catalog.wait_changed(version), 5)
            assert "new-model" in [m.id for m in runtime.catalog.models()]
            assert runtime.readiness()[0] is True
            assert status["background_tasks"]["model-refresh"]["restarts"] == 0


async def test_a_background_loop_that_dies_is_restarted_counted_and_reported(
        tmp_path, fast_retries, monkeypatch, caplog):
    original = ModelCatalog.run
    calls = []

    async def dies_once(self, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("refresh loop bug\nwith a second line")
        await original(self, **kwargs)

    monkeypatch.setattr(ModelCatalog, "run", dies_once)
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, FAST_REFRESH)
        with caplog.at_level(logging.ERROR, logger="aiosd.tasks"):
            async with serve_aiosd(config) as aiosd:
                runtime = aiosd.runtime
                await wait_for(lambda: len(calls) == 2)
                version = runtime.catalog.version
                kernel.models.append({"name": "new-model", "backend": "openai"})
                await asyncio.wait_for(runtime.catalog.wait_changed(version), 5)  # the restarted loop refreshes
                async with httpx.AsyncClient(base_url=aiosd.url) as client:
                    status = (await client.get("/status")).json()
                    metrics = (await client.get("/metrics")).text
    record = status["background_tasks"]["model-refresh"]
    assert record["running"] is True and record["restarts"] == 1
    assert record["last_error"] == "RuntimeError: refresh loop bug\\nwith a second line"
    assert 'aiosd_background_task_restarts_total{task="model-refresh"} 1.0' in metrics
    assert 'aiosd_background_task_restarts_total{task="openclaw-sync"} 0.0' in metrics
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["background task model-refresh died (RuntimeError: refresh loop bug\\nwith a second line); "
                     "restarting it in 0s (restart 1)"]


async def test_the_supervisor_backs_off_and_close_never_raises():
    runs: list[int] = []
    restarted: list[str] = []
    supervisor = TaskSupervisor(on_restart=restarted.append, first_delay=0.0, max_delay=0.004)
    third = asyncio.Event()

    async def always_dies():
        runs.append(1)
        if len(runs) == 3:
            third.set()
        if len(runs) >= 4:
            await asyncio.Event().wait()  # runs until cancelled
        raise ValueError("nope")

    async def returns():
        return None

    supervisor.start("dies", always_dies)
    supervisor.start("returns", returns)
    await asyncio.wait_for(third.wait(), 5)
    await supervisor.close()
    status = supervisor.status()
    assert status["dies"]["restarts"] >= 2 and status["dies"]["last_error"] == "ValueError: nope"
    assert status["returns"]["last_error"] == "it returned, but it should run until aiosd stops"
    assert status["dies"]["running"] is False
    assert "dies" in restarted and "returns" in restarted


def test_a_daemon_whose_kernel_lists_nested_json_keeps_serving_and_sigterm_exits_0(tmp_path):
    with FakeKernel() as kernel:
        kernel.list_body = NESTED
        port = free_port()
        config = daemon_config(kernel.url, port).replace("discover: false", "discover: true")
        daemon = start_daemon(tmp_path, config, port)
        try:
            deadline = time.monotonic() + 10
            while (daemon.status()["model_refresh"] or {}).get("ok") is not False:
                assert time.monotonic() < deadline, "the refresh never reported the failure"
                time.sleep(0.05)
            assert daemon.model_ids() == ["sonnet"]  # mappings kept: the kernel's list is not known
            assert daemon.status()["background_tasks"]["model-refresh"]["running"] is True
            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.process.wait() == 0
        finally:
            close_daemon(daemon)
    logged = daemon.process.stderr_lines()
    assert any("could not refresh the kernel's model list" in line for line in logged), logged
    assert not any("Traceback" in line for line in logged)
