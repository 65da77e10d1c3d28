"""The running daemon keeps openclaw.json in step: at start, on model-list changes, after reloads, every interval."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel
from tests.support.openclaw import assert_valid_openclaw


def provider_ids(path) -> list[str]:
    document = json.loads(path.read_text())
    return [row["id"] for row in document["models"]["providers"]["aios"]["models"]]


async def synced(aiosd, count: int) -> None:
    await asyncio.wait_for(aiosd.runtime.wait_for_sync(count), 5)


async def test_at_start_the_file_lists_mapped_and_discovered_models_and_validates(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, "models: {discover: true}", openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await synced(aiosd, 0)
            path = tmp_path / "openclaw" / "openclaw.json"
            document = assert_valid_openclaw(path)
            ids = provider_ids(path)
            assert ids[0] == "sonnet"
            assert set(ids[1:]) == {m["name"] for m in kernel.models}
            provider = document["models"]["providers"]["aios"]
            assert provider["baseUrl"] == aiosd.base_url
            assert "hostname" not in json.dumps(document) and "api_key" not in json.dumps(document)
            assert aiosd.runtime.status()["openclaw_sync"]["outcome"] == "created"


async def test_a_model_the_kernel_starts_listing_reaches_openclaw_without_a_restart(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, "models: {discover: true}", openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await synced(aiosd, 0)
            done = aiosd.runtime.syncs_done
            kernel.models.append({"name": "new-model", "backend": "openai", "hostname": "http://10.9.9.9"})
            await aiosd.runtime.catalog.refresh()
            await synced(aiosd, done)
            path = tmp_path / "openclaw" / "openclaw.json"
            assert "new-model" in provider_ids(path)
            assert_valid_openclaw(path)
            # And GET /v1/models agrees with the file.
            async with httpx.AsyncClient(base_url=aiosd.base_url) as client:
                listed = [m["id"] for m in (await client.get("/models")).json()["data"]]
            assert listed == provider_ids(path)


async def test_a_reload_that_adds_a_mapped_model_rewrites_the_file(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await synced(aiosd, 0)
            done = aiosd.runtime.syncs_done
            extra = replace(config.models.map[0], id="haiku", name="haiku (via AIOS)")
            await aiosd.runtime.apply(replace(config, models=replace(config.models, map=(*config.models.map, extra))))
            await synced(aiosd, done)
            assert provider_ids(tmp_path / "openclaw" / "openclaw.json") == ["sonnet", "haiku"]


async def test_every_interval_a_removed_provider_is_put_back_and_an_unchanged_file_is_not_rewritten(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'openclaw: {interval: "50ms"}', openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await synced(aiosd, 0)
            path = tmp_path / "openclaw" / "openclaw.json"
            mtime = path.stat().st_mtime_ns
            done = aiosd.runtime.syncs_done
            await synced(aiosd, done + 1)  # two more interval syncs, nothing to change
            assert path.stat().st_mtime_ns == mtime
            assert aiosd.runtime.last_sync.outcome == "unchanged"

            document = json.loads(path.read_text())
            document["models"]["providers"] = {"other": {"baseUrl": "http://x/v1", "models": []}}
            path.write_text(json.dumps(document))
            done = aiosd.runtime.syncs_done
            await synced(aiosd, done)
            restored = json.loads(path.read_text())["models"]["providers"]
            assert set(restored) == {"other", "aios"}


async def test_an_unparseable_file_is_left_alone_and_the_daemon_keeps_serving(tmp_path):
    path = tmp_path / "openclaw" / "openclaw.json"
    path.parent.mkdir()
    broken = '{"models": {"providers": {,}}'
    path.write_text(broken)
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await synced(aiosd, 0)
            assert path.read_text() == broken
            status = aiosd.runtime.status()["openclaw_sync"]
            assert status["outcome"] == "refused"
            assert "line 1" in status["message"]
            assert "refused" in aiosd.runtime.status_line() or "openclaw sync refused" in aiosd.runtime.status_line()
            async with httpx.AsyncClient(base_url=aiosd.base_url) as client:
                reply = await client.post("/chat/completions", json={"model": "sonnet", "messages": [
                    {"role": "user", "content": "still there?"}]})
            assert reply.status_code == 200


async def test_by_default_a_missing_file_is_not_created_and_status_says_missing(tmp_path, caplog):
    import logging

    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'openclaw: {create: false, interval: "50ms"}', openclaw_sync=True)
        path = tmp_path / "openclaw" / "openclaw.json"
        with caplog.at_level(logging.DEBUG, logger="aiosd.openclaw"):
            async with serve_aiosd(config) as aiosd:
                await synced(aiosd, 2)  # three syncs: the first at start, two interval ones
                status = aiosd.runtime.status()["openclaw_sync"]
                line = aiosd.runtime.status_line()
        assert not path.parent.exists()
        assert status["outcome"] == "missing" and "openclaw.create: true" in status["message"]
        assert "openclaw sync missing" in line
        levels = [r.levelno for r in caplog.records if r.name == "aiosd.openclaw"]
        assert levels[0] == logging.WARNING and set(levels[1:]) == {logging.DEBUG} and len(levels) >= 3


async def test_a_sync_stuck_in_the_file_system_is_abandoned_and_does_not_hold_up_shutdown(tmp_path, monkeypatch):
    """A thread blocked in the file system (as on a hung mount) is simulated by a sync that waits
    on an event; the runtime must stop waiting for it, say so, start no second one, and close."""
    import threading

    import aiosd.openclaw.sync as sync_module

    release = threading.Event()
    returned = threading.Event()
    calls = []

    def stuck_sync(*args, **kwargs):
        calls.append(1)
        try:
            release.wait(30)
        finally:
            returned.set()
        raise AssertionError("released only when the test ends")

    monkeypatch.setattr(sync_module, "sync_openclaw", stuck_sync)
    monkeypatch.setattr("aiosd.service.runtime.OPENCLAW_SYNC_TIMEOUT", 0.2)
    try:
        with FakeKernel() as kernel:
            config = config_for(tmp_path, kernel.url, 'openclaw: {interval: "50ms"}', openclaw_sync=True)
            async with serve_aiosd(config) as aiosd:
                await synced(aiosd, 0)
                first = aiosd.runtime.last_sync
                assert first.outcome == "refused" and "did not finish within 0.2s" in first.message
                await synced(aiosd, aiosd.runtime.syncs_done)
                second = aiosd.runtime.last_sync
                assert second.outcome == "refused" and "not starting another" in second.message
                assert len(calls) == 1
                assert aiosd.runtime.status()["openclaw_sync"]["outcome"] == "refused"
            # shut down while the stuck sync is still stuck: shutdown did not wait for its thread
            assert not returned.is_set() and not release.is_set()
    finally:
        release.set()


async def test_the_daemon_writes_its_worst_case_as_the_providers_timeout_seconds(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await synced(aiosd, 0)
    document = assert_valid_openclaw(tmp_path / "openclaw" / "openclaw.json")
    # the harness: 5 s queue + 4 attempts x 5 s + 1 s of retry waits = 26 s, + 30 s margin
    assert document["models"]["providers"]["aios"]["timeoutSeconds"] == 56


async def test_when_openclaw_holds_its_lock_the_daemon_tries_again_soon_not_a_whole_interval_later(
    tmp_path, monkeypatch
):
    import os

    import aiosd.openclaw.lock as lock_module

    monkeypatch.setattr(lock_module, "WAIT", 0.05)
    monkeypatch.setattr("aiosd.service.loops.OPENCLAW_BUSY_RETRY", 0.1)
    path = tmp_path / "openclaw" / "openclaw.json"
    path.parent.mkdir()
    path.write_text('{"gateway": {"port": 18789}}')
    lock = lock_module.lock_path_for(path)
    lock.write_text(json.dumps({"pid": os.getppid(), "createdAt": "2099-01-01T00:00:00.000Z"}))
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, 'openclaw: {interval: "600s"}', openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await synced(aiosd, 0)
            assert aiosd.runtime.last_sync.outcome == "busy"
            assert "openclaw sync busy" in aiosd.runtime.status_line()
            lock.unlink()  # OpenClaw is done
            await synced(aiosd, aiosd.runtime.syncs_done)
            assert aiosd.runtime.last_sync.outcome == "written"
    assert "aios" in json.loads(path.read_text())["models"]["providers"]
