"""A kernel listing tens of thousands of models: what aiosd keeps, offers, writes, logs and shows stays bounded."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx

from aiosd.kernel.client import KernelClient
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel


def many_models(count: int) -> list[dict]:
    """``count`` models named so that sorting by name is sorting by number (vendor-00000, ...)."""
    return [{"name": f"vendor-{i:05d}/model-{'x' * 40}-{i}", "backend": "openai", "hostname": "http://127.0.0.1:1"}
            for i in range(count)]


async def test_a_kernel_listing_thousands_of_models_is_bounded_everywhere(tmp_path, caplog):
    """Issue 18 item 4: 55,000 models made openclaw.json 40 MB, a log line 6 MB and every /ui/api/live
    poll 17 MB. With the caps (kernel.max_models, models.max_discovered) everything stays bounded and
    one warning line per cap says what was dropped."""
    mapped_model = {"name": "gpt-4o-mini", "backend": "openai"}  # what the harness maps sonnet to
    with FakeKernel(models=[*many_models(2999), mapped_model]) as kernel:  # the defaults: 1000 and 500
        config = config_for(tmp_path, kernel.url, "models: {discover: true}", openclaw_sync=True)
        with caplog.at_level(logging.INFO):
            async with serve_aiosd(config) as aiosd:
                await asyncio.wait_for(aiosd.runtime.wait_for_sync(0), 10)
                await aiosd.runtime.catalog.refresh()  # a second refresh: no second warning
                async with httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
                    listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
                    live = await client.get("/ui/api/live")
                    status = await client.get("/status")
                    mapped = await client.post("/v1/chat/completions", json={
                        "model": "sonnet", "messages": [{"role": "user", "content": "hi"}]})
    # models.map always, then the first 500 discovered by name
    assert listed == ["sonnet", "gpt-4o-mini", *(m["name"] for m in many_models(499))]
    assert mapped.status_code == 200
    document = json.loads((tmp_path / "openclaw" / "openclaw.json").read_text())
    assert [row["id"] for row in document["models"]["providers"]["aios"]["models"]] == listed
    assert (tmp_path / "openclaw" / "openclaw.json").stat().st_size < 400_000
    assert live.status_code == status.status_code == 200
    assert len(live.content) < 150_000 and len(status.content) < 250_000
    messages = [r.getMessage() for r in caplog.records]
    assert max(len(m) for m in messages) < 2000
    dropped = [m for m in messages if "kernel.max_models" in m]
    assert dropped == [f"kernel {config.kernel.name} lists 3000 models; aiosd takes the first 1000 by name "
                       "(kernel.max_models) and drops 2000, from 'vendor-00999/model-"
                       + "x" * 40 + "-…' to 'vendor-02998/model-" + "x" * 40 + "-…'"]
    left_out = [m for m in messages if "models.max_discovered" in m]
    assert len(left_out) == 1 and "offers the first 500 by name" in left_out[0] and "leaves out 500" in left_out[0]
    assert "and 480 more" in next(m for m in messages if m.startswith("models changed"))


async def test_one_kernels_list_is_kept_to_kernel_max_models_first_by_name(tmp_path):
    """Issue 18 item 4: the per-kernel cap applies where the list is read, so no more is held."""
    with FakeKernel(models=list(reversed(many_models(50)))) as kernel:
        config = config_for(tmp_path, kernel.url, "kernel: {max_models: 10}")
        async with KernelClient(config.kernel) as client:
            listed = await client.list_llms()
            assert client.models_dropped == 40
    assert sorted(entry["name"] for entry in listed) == [m["name"] for m in many_models(10)]
    assert all(set(entry) == {"name", "backend"} for entry in listed)  # hostname never kept
