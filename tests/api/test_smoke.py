"""The endpoint end to end: OpenClaw's recorded request through aiosd to the fake kernel and back."""

from __future__ import annotations

import httpx

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel


async def test_recorded_text_turn_streams_back_the_kernel_answer(tmp_path):
    with FakeKernel() as kernel:
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.base_url) as client,
        ):
            response = await client.post(
                "/chat/completions",
                json={"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "echo: hi" in response.text
    assert response.text.endswith("data: [DONE]\n\n")
