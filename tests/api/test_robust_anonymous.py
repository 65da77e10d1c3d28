"""Anonymous traffic where auth.keys is set: refused requests stay out of the status page's list and the journal."""

from __future__ import annotations

import logging

import httpx

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel

KEY = "sk-test-0123456789"
CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}


async def test_refused_requests_are_counted_not_listed_logged_rate_limited_and_their_ids_not_taken(
        tmp_path, caplog):
    """Issue 18 item 10: 300 POSTs without a key, each with a forged `X-Request-Id: req_...`, leave the
    status page's last requests alone (counted instead), write at most two log lines, and are never
    answered with the forged id. Before: all 200 rows were such 401s, with aiosd-looking ids, and
    every one wrote a line."""
    caplog.set_level(logging.INFO, logger="aiosd")
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, f'auth: {{keys: [{{key: "{KEY}", name: team}}]}}')
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
            real = await client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"})
            forged = [f"req_{i:016x}" for i in range(300)]
            answers = [await client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": rid})
                       for rid in forged]
            live = (await client.get("/ui/api/live", headers={"authorization": f"Bearer {KEY}"})).json()
    assert real.status_code == 200
    assert {a.status_code for a in answers} == {401}
    assert not {a.headers["x-request-id"] for a in answers} & set(forged)
    assert [(row["request_id"], row["status"]) for row in live["requests"]] == [(real.headers["x-request-id"], 200)]
    assert live["refused_auth"] == 300
    refused_lines = [r.getMessage() for r in caplog.records if "401" in r.getMessage() or "refused" in r.getMessage()]
    assert 1 <= len(refused_lines) <= 2, refused_lines
    assert "req_0000" not in caplog.text


async def test_a_clients_own_request_id_is_kept_unless_it_looks_like_aiosds(tmp_path):
    """Issue 18 item 10: a sane id of the client's is echoed and logged; one in aiosd's own form
    (`req_...`, any case) is replaced by a new one."""
    with FakeKernel() as kernel:
        async with serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd, \
                httpx.AsyncClient(base_url=aiosd.url) as client:
            kept = await client.get("/healthz", headers={"x-request-id": "openclaw-turn-42"})
            mimics = [await client.get("/healthz", headers={"x-request-id": rid})
                      for rid in ("req_0123456789abcdef", "REQ_x", "Req_1")]
    assert kept.headers["x-request-id"] == "openclaw-turn-42"
    for response, sent in zip(mimics, ("req_0123456789abcdef", "REQ_x", "Req_1"), strict=True):
        assert response.headers["x-request-id"] != sent and response.headers["x-request-id"].startswith("req_")
