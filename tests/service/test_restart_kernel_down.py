"""A restart while the kernel is down keeps the discovered models in openclaw.json (remembered in state_dir)."""

from __future__ import annotations

import asyncio
import json

import httpx

from aiosd.config.loader import load_config
from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.fake_kernel import FakeKernel
from tests.support.openclaw import assert_valid_openclaw


def openclaw_ids(tmp_path) -> list[str]:
    document = json.loads((tmp_path / "openclaw" / "openclaw.json").read_text())
    return [row["id"] for row in document["models"]["providers"]["aios"]["models"]]


async def serve_once(config, check) -> None:
    async with serve_aiosd(config) as aiosd:
        await asyncio.wait_for(aiosd.runtime.wait_for_sync(0), 10)
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            status = (await client.get("/status")).json()
            listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        check(status, listed)


async def test_a_restart_with_the_kernel_down_keeps_discovered_models_until_the_kernel_answers(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = config_for(tmp_path, url, 'models: {discover: true}\nstate_dir: "state"', openclaw_sync=True)
    with FakeKernel(port=port) as kernel:
        discovered = sorted(m["name"] for m in kernel.models)

        def first_run(status, listed):
            assert listed == ["sonnet", *discovered]
            assert not any(m["unconfirmed"] for m in status["models"])

        await serve_once(config, first_run)
    assert openclaw_ids(tmp_path) == ["sonnet", *discovered]

    # The kernel is down now (nothing listens on its port): a restart must not strip the file.
    def kernel_down(status, listed):
        assert listed == ["sonnet", *discovered]
        assert [m["id"] for m in status["models"] if m["unconfirmed"]] == discovered
        assert status["model_refresh"]["ok"] is False
        assert status["remembered_models"]["in_use"] is True

    await serve_once(load_config(config.source_path, env={}), kernel_down)
    assert_valid_openclaw(tmp_path / "openclaw" / "openclaw.json")
    assert openclaw_ids(tmp_path) == ["sonnet", *discovered]
    assert (tmp_path / "state" / "known-models.json").is_file()  # state_dir, relative to the config file

    # Back with another list: the kernel's list wins at once.
    with FakeKernel(models=[{"name": "gpt-4o-mini", "backend": "openai"}, {"name": "fresh", "backend": "openai"}],
                    port=port):
        def kernel_back(status, listed):
            assert listed == ["sonnet", "fresh", "gpt-4o-mini"]
            assert not any(m["unconfirmed"] for m in status["models"])

        await serve_once(load_config(config.source_path, env={}), kernel_back)
    assert openclaw_ids(tmp_path) == ["sonnet", "fresh", "gpt-4o-mini"]


def test_aiosd_status_marks_remembered_models():
    from aiosd.cli.status import render_status

    status = {
        "version": "x", "uptime_seconds": 1, "config": {"path": "/c", "generation": 1, "listen": "l"},
        "kernel": {"url": "u", "ready": False, "reason": "down"},
        "calls": {"in_flight": 0, "queued": 0, "max_concurrency": 1, "retries_last_5m": 0},
        "models": [{"id": "alpha", "kernel_model": "alpha", "source": "discovery", "tools": "prompt",
                    "unconfirmed": True}],
        "remembered_models": {"path": "/s/known-models.json", "models": 1, "saved_at": 0, "in_use": True},
    }
    lines = render_status(status).splitlines()
    assert any(line.split() == ["alpha", "->", "alpha", "(discovery,", "unconfirmed,", "tools:", "prompt)"]
               for line in lines)
    assert any("remembered from the kernel's last list (/s/known-models.json)" in line for line in lines)
