"""A mapped model the kernel does not list, seen from outside: /v1/models, chat, openclaw.json, the status."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx

from aiosd.cli.status import render_status
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel

MAP = 'models: {discover: true, map: {sonnet: {kernel_model: "claude-gone"}, fast: {kernel_model: "gpt-4o-mini"}}}'


def openclaw_ids(tmp_path) -> list[str]:
    document = json.loads((tmp_path / "openclaw" / "openclaw.json").read_text())
    return [row["id"] for row in document["models"]["providers"]["aios"]["models"]]


async def test_an_unlisted_mapping_is_absent_everywhere_and_explained(tmp_path, caplog):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, MAP, openclaw_sync=True)
        with caplog.at_level(logging.WARNING, logger="aiosd.models"):
            async with serve_aiosd(config) as aiosd:
                await asyncio.wait_for(aiosd.runtime.wait_for_sync(0), 5)
                async with httpx.AsyncClient(base_url=aiosd.url) as client:
                    listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
                    answer = await client.post("/v1/chat/completions", json={
                        "model": "sonnet", "messages": [{"role": "user", "content": "hi"}]})
                    status = (await client.get("/status")).json()
    assert "sonnet" not in listed and "fast" in listed
    assert openclaw_ids(tmp_path) == listed
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_not_found"
    assert "mapped to kernel model 'claude-gone', which the kernel does not list" in error["message"]
    assert kernel.query_count == 0  # never sent to the kernel to fail there as a 502
    assert status["unavailable"] == [{"id": "sonnet", "kernel_model": "claude-gone",
                                      "reason": "mapped to kernel model 'claude-gone', which the kernel does not list"}]
    shown = render_status(status)
    assert "NOT OFFERED sonnet: mapped to kernel model 'claude-gone', which the kernel does not list" in shown
    assert any(r.getMessage().startswith("models.map.sonnet is mapped to kernel model 'claude-gone'")
               for r in caplog.records)


async def test_with_the_kernel_down_mappings_are_offered_and_synced_as_they_are(tmp_path):
    with FakeKernel() as kernel:
        url = kernel.url
    config = config_for(tmp_path, url, MAP, openclaw_sync=True)  # nothing listens there any more
    async with serve_aiosd(config) as aiosd:
        await asyncio.wait_for(aiosd.runtime.wait_for_sync(0), 10)
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            status = (await client.get("/status")).json()
    assert listed == ["sonnet", "fast"] and openclaw_ids(tmp_path) == listed
    assert status["unavailable"] == [] and status["model_refresh"]["kernel_list_known"] is False
