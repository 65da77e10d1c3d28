"""Sessions through a real aiosd: the session headers OpenClaw sends, checked, shown short in the log
line, /status, the status page's data and the metrics (counts only), and in agent_name when asked."""

from __future__ import annotations

import logging
import re

import httpx

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
CHAT_SESSION = "a139ab8f-7f21-4a55-b1c5-63d775b07d50:0"  # the shape OpenClaw 2026.9.6 sends
CRON_SESSION = "5d1f0e2c-9b7a-4c3e-8f6d-0a1b2c3d4e5f:0"


def openclaw_headers(session: str) -> dict[str, str]:
    """What OpenClaw's openai-completions transport sends with compat.sendSessionAffinityHeaders."""
    return {"session_id": session, "x-client-request-id": session, "x-session-affinity": session}


async def test_two_sessions_are_two_sessions_in_the_log_status_and_page_and_never_by_their_id(tmp_path, caplog):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, "kernel: {agent_name_per_session: true}")
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            with caplog.at_level(logging.INFO):
                chat = [await client.post("/v1/chat/completions", json=CHAT, headers=openclaw_headers(CHAT_SESSION))
                        for _ in range(2)]
                cron = await client.post("/v1/chat/completions", json=CHAT, headers=openclaw_headers(CRON_SESSION))
                # The Anthropic dialect's header, alone.
                messages = await client.post("/v1/messages", headers={"x-session-affinity": CRON_SESSION}, json={
                    "model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
                plain = await client.post("/v1/chat/completions", json=CHAT)
            status = (await client.get("/status")).json()
            live = (await client.get("/ui/api/live")).json()
            metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in [*chat, cron, messages, plain]] == [200] * 5
    lines = [r.getMessage() for r in caplog.records if "answered in" in r.getMessage()]
    shorts = [m.group(1) if (m := re.search(r", session ([0-9a-f]{8})\)", line)) else None for line in lines]
    assert shorts[0] == shorts[1] and shorts[2] == shorts[3] and shorts[0] != shorts[2] and shorts[4] is None
    # The kernel's logs tell the conversations apart; requests without one keep the plain agent_name.
    agents = [q["agent_name"] for q in kernel.queries]
    assert agents == [f"openclaw.{shorts[0]}"] * 2 + [f"openclaw.{shorts[2]}"] * 2 + ["openclaw"]
    sessions = status["sessions"]
    assert sessions["active"] == 2 and sessions["max_sessions"] == 10000
    assert sum(sessions["per_kernel"].values()) == 2
    assert status["classes"][0]["keys"][0]["sessions_active"] == 2
    rows = {row["request_id"]: row["session"] for row in live["requests"]}
    assert sorted(rows.values()) == sorted([shorts[0], shorts[0], shorts[2], shorts[2], "-"])
    assert 'aiosd_scheduler_sessions{key="anonymous"} 2.0' in metrics
    assert 'aiosd_scheduler_session_calls_total{affinity="kept"} 2.0' in metrics
    for text in (str(status), str(live), metrics, "\n".join(r.getMessage() for r in caplog.records)):
        assert "a139ab8f" not in text and "5d1f0e2c" not in text  # the id itself is never shown


async def test_a_session_id_out_of_bounds_gets_a_clear_400_and_reaches_no_kernel(tmp_path):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url)
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            too_long = await client.post("/v1/chat/completions", json=CHAT, headers={"x-session-affinity": "a" * 129})
            odd = await client.post("/v1/chat/completions", json=CHAT, headers={"session_id": "chat one;drop"})
            longest = await client.post("/v1/chat/completions", json=CHAT, headers={"x-session-affinity": "a" * 128})
            status = (await client.get("/status")).json()
    assert too_long.status_code == 400 and odd.status_code == 400
    message = too_long.json()["error"]["message"]
    assert "x-session-affinity" in message and "1 to 128" in message and "129 bytes" in message
    assert "session_id" in odd.json()["error"]["message"] and "not allowed" in odd.json()["error"]["message"]
    assert "drop" not in odd.json()["error"]["message"]
    assert longest.status_code == 200 and kernel.query_count == 1
    assert status["sessions"]["active"] == 1
