"""The status page's JSON (/ui/api/...) through a real aiosd and fake kernel.

Shape, cursors, auth, loopback-only, no prompt text or key, bounded sizes.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from aiosd.api.app import build_app
from aiosd.service.runtime import Runtime
from tests.support.aiosd_harness import config_for
from tests.support.endpoint import chat, stack, wait_for
from tests.support.fake_kernel import FakeKernel, Hang, LLMFailure, RetryAfter, ServerError

LIVE = "/ui/api/live"


@pytest.fixture(autouse=True)
def info_logs(caplog):
    # The daemon runs aiosd's loggers at info (logging.level); the log ring sees what they emit.
    caplog.set_level(logging.INFO, logger="aiosd")


def ui_client(s, **options) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=s.aiosd.url, timeout=10, **options)


async def test_live_state_lists_the_kernel_the_queue_and_each_request(tmp_path):
    async with stack(tmp_path) as s, ui_client(s) as ui:
        ok = await s.client.post("/chat/completions", json=chat("one"))
        s.kernel.script(LLMFailure(429), "after a retry")
        retried = await s.client.post("/chat/completions", json=chat("two"))
        s.kernel.script(ServerError())
        failed = await s.client.post("/chat/completions", json=chat("three"))
        unknown = await s.client.post("/chat/completions", json=chat("four", model="no-such-model"))
        assert [r.status_code for r in (ok, retried, failed, unknown)] == [200, 200, 502, 404]
        [kernel] = (await ui.get(LIVE)).json()["kernels"]
        assert kernel["health"] == "down" and "failed" in kernel["reason"]  # its last call failed

        assert (await s.client.post("/chat/completions", json=chat("five"))).status_code == 200
        response = await ui.get(LIVE, params={"history_after": 0})
        assert response.status_code == 200
        live = response.json()

    [kernel] = live["kernels"]
    assert kernel["health"] == "up" and kernel["url"] == s.kernel.url and kernel["reason"] == "ok"
    assert kernel["capacity"] == s.runtime.config.kernel.max_concurrency and kernel["in_flight"] == 0
    assert kernel["latency"]["count"] >= 4

    assert live["queue"]["waiting"] == 0
    assert [(c["name"], [k["key"] for k in c["keys"]]) for c in live["queue"]["classes"]] == [("interactive", ["-"])]

    rows = {row["request_id"]: row for row in live["requests"]}
    assert [row["seq"] for row in live["requests"]] == [1, 2, 3, 4, 5] and live["requests_seq"] == 5
    row = rows[ok.headers["x-request-id"]]
    assert (row["model"], row["outcome"], row["status"], row["attempts"]) == ("mock-model", "ok", 200, 1)
    assert row["kernels"] == [s.kernel.url.removeprefix("http://")]
    assert row["kernel_time"] > 0 and row["total"] >= row["kernel_time"]
    row = rows[retried.headers["x-request-id"]]
    assert (row["outcome"], row["status"], row["attempts"]) == ("ok", 200, 2) and row["retry_wait"] > 0
    row = rows[failed.headers["x-request-id"]]
    assert (row["outcome"], row["status"], row["attempts"]) == ("kernel_error", 502, 1)
    row = rows[unknown.headers["x-request-id"]]
    assert (row["model"], row["outcome"], row["status"], row["attempts"], row["kernels"]) == (
        "no-such-model", "unknown_model", 404, 0, [])

    assert sum(b["requests"] for b in live["history"]) == 5
    assert sum(b["errors"] for b in live["history"]) == 2
    assert sum(b["kernel_time"] for b in live["history"]) > 0
    assert live["history_window"] == 900

    assert sorted((m["id"], m["source"], m["available"], m["unconfirmed"]) for m in live["models"]) == [
        ("mock-model", "map", True, False), ("sonnet", "map", True, False)]
    assert live["config"]["generation"] == 1 and live["config"]["last_refused"] is None
    assert live["openclaw"]["sync_enabled"] is False
    assert live["openclaw"]["path"] == str(tmp_path / "openclaw" / "openclaw.json")


async def test_cursors_send_only_what_is_new(tmp_path):
    async with stack(tmp_path) as s, ui_client(s) as ui:
        await s.client.post("/chat/completions", json=chat("one"))
        first = (await ui.get(LIVE)).json()
        assert len(first["requests"]) == 1
        again = (await ui.get(LIVE, params={"requests_after": first["requests_seq"],
                                             "history_after": first["history_second"]})).json()
        assert again["requests"] == [] and again["requests_seq"] == first["requests_seq"]
        assert all(b["second"] > first["history_second"] for b in again["history"])
        await s.client.post("/chat/completions", json=chat("two"))
        later = (await ui.get(LIVE, params={"requests_after": first["requests_seq"]})).json()
        assert [r["seq"] for r in later["requests"]] == [2]
        # A page that outlived an aiosd restart sends a cursor from before: it learns the real one.
        stale = (await ui.get(LIVE, params={"requests_after": 999})).json()
        assert stale["requests"] == [] and stale["requests_seq"] == 2


async def test_a_waiting_request_and_a_retry_wait_show_in_the_queue(tmp_path):
    extra = """
kernel: {max_concurrency: 1, queue_timeout: "10s"}
retry: {max_retries: 1, budget: "30s", backoff: {initial: "20s", max: "20s", jitter: 0.0}}
"""
    async with stack(tmp_path, extra) as s, ui_client(s) as ui:
        hang = Hang(then="released")
        s.kernel.script(hang)
        holding = asyncio.create_task(s.client.post("/chat/completions", json=chat("holds the slot")))
        await s.kernel.wait_for_in_flight_async(1)
        waiting = asyncio.create_task(s.client.post("/chat/completions", json=chat("waits", model="sonnet")))
        await wait_for(lambda: s.runtime.scheduler.queued == 1, what="the second request queueing")

        queue = (await ui.get(LIVE)).json()["queue"]
        assert (queue["waiting"], queue["in_flight"], queue["capacity"]) == (1, 1, 1)
        [request] = queue["waiting_requests"]
        assert request["model"] == "sonnet" and request["key"] == "anonymous" and request["waited_seconds"] >= 0
        assert queue["oldest_wait_seconds"] is not None
        [klass] = queue["classes"]
        assert klass["waiting"] == 1 and klass["keys"][0]["in_flight"] == 1

        s.kernel.script(LLMFailure(429))  # the waiting one, once admitted, gets a 429 and waits 20 s to retry
        hang.release()
        assert (await holding).status_code == 200
        await wait_for(lambda: any(t.phase == "retry_wait" for t in s.runtime.history.live.values()),
                       what="a retry wait")
        queue = (await ui.get(LIVE)).json()["queue"]
        [retry] = queue["retry_waits"]
        assert retry["model"] == "sonnet" and retry["attempts"] == 1 and 15 < retry["seconds_left"] <= 20
        waiting.cancel()


async def test_a_requests_log_lines_come_by_its_id(tmp_path):
    async with stack(tmp_path) as s, ui_client(s) as ui:
        s.kernel.script(LLMFailure(429), "fine")
        response = await s.client.post("/chat/completions", json=chat("retried"),
                                        headers={"x-request-id": "my:req-1"})
        other = await s.client.post("/chat/completions", json=chat("other"), headers={"x-request-id": "my:req-12"})
        assert response.status_code == other.status_code == 200
        log = (await ui.get("/ui/api/requests/my:req-1/log")).json()
        assert log["request_id"] == "my:req-1"
        lines = [line["line"] for line in log["lines"]]
        assert any("attempt 1/4 failed" in line and "429" in line and "retrying" in line for line in lines), lines
        assert any("answered in" in line and "2 attempts" in line for line in lines), lines
        assert not any("my:req-12" in line for line in lines)  # another id that merely starts alike
        assert all(line["level"] in ("INFO", "WARNING", "ERROR") and line["logger"].startswith("aiosd")
                   for line in log["lines"])

        assert (await ui.get("/ui/api/requests/never-seen/log")).json() == {"request_id": "never-seen", "lines": []}
        bad = await ui.get("/ui/api/requests/" + "x" * 65 + "/log")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


async def test_no_prompt_or_answer_text_nor_key_reaches_the_page(tmp_path):
    marker = "PROMPT-MARKER-7f3a9c"
    answer = "ANSWER-MARKER-51be02"
    key = "sk-dashboard-test-key-0123456789"
    extra = f'auth: {{keys: ["{key}"]}}\nretry: {{max_retries: 1}}'
    async with stack(tmp_path, extra, headers={"authorization": f"Bearer {key}"}) as s:
        # answered; retried then answered (streaming); kernel failure; rate limit past the retries.
        s.kernel.script(answer, LLMFailure(429), answer, ServerError(), RetryAfter(1), RetryAfter(1))
        statuses = []
        for i in range(4):
            body = chat(f"{marker} number {i}", stream=i == 1)
            body["messages"].insert(0, {"role": "system", "content": f"system {marker}"})
            statuses.append((await s.client.post("/chat/completions", json=body)).status_code)
        messages = await s.client.post("/messages", json={
            "model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": marker}]})
        statuses.append(messages.status_code)
        assert statuses == [200, 200, 502, 429, 200]

        async with ui_client(s, headers={"authorization": f"Bearer {key}"}) as ui:
            live = await ui.get(LIVE)
            assert live.status_code == 200
            ids = [row["request_id"] for row in live.json()["requests"]]
            assert len(ids) == 5
            logs = [(await ui.get(f"/ui/api/requests/{i}/log")).json() for i in ids]
            assert all(log["lines"] for log in logs)  # the log lines were really looked at
            pages = [live.text] + [json.dumps(log) for log in logs]
            pages += [(await ui.get(path)).text for path in ("/ui/", "/ui/app.js", "/ui/app.css")]
    everything = "\n".join(pages)
    assert marker not in everything
    assert answer not in everything
    assert key not in everything


async def test_with_auth_keys_the_data_needs_a_key_and_the_page_does_not(tmp_path):
    key = "sk-dashboard-auth-0123456789abcdef"
    async with stack(tmp_path, f'auth: {{keys: ["{key}"]}}') as s, ui_client(s) as ui:
        for path in (LIVE, "/ui/api/requests/req_1/log"):
            refused = await ui.get(path)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
            assert (await ui.get(path, headers={"authorization": "Bearer wrong"})).status_code == 401
            assert (await ui.get(path, headers={"authorization": f"Bearer {key}"})).status_code == 200
        page = await ui.get("/ui/")  # holds no data: it must load to ask for the key
        assert page.status_code == 200 and 'id="key-form"' in page.text


async def test_without_keys_only_loopback_clients_are_served(tmp_path):
    with FakeKernel(record=False) as kernel:
        runtime = Runtime(config_for(tmp_path, kernel.url, "allow_remote: true"))
        app = build_app(runtime)
        for client, expected in ((("192.0.2.7", 40000), 403), (("::1", 40000), 200), (("127.0.0.5", 40000), 200)):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://aiosd") as ui:
                for path in ("/ui/", "/ui/app.js", LIVE, "/ui/api/requests/req_1/log"):
                    response = await ui.get(path)
                    assert response.status_code == expected, (client, path, response.text[:200])
                    if expected == 403:
                        assert "loopback" in response.json()["error"]["message"]
        await runtime.close()


async def test_the_page_is_locked_down_and_documented(tmp_path):
    async with stack(tmp_path) as s, ui_client(s) as ui:
        redirect = await ui.get("/")
        assert redirect.status_code in (301, 302, 307, 308) and redirect.headers["location"] == "/ui/"
        for path, kind in (("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css"),
                           (LIVE, "application/json")):
            response = await ui.get(path)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe" not in csp
            assert response.headers["x-content-type-options"] == "nosniff"
        page = (await ui.get("/ui/")).text
        assert "http" not in page.replace("http://www.w3.org", "")  # nothing fetched from elsewhere
        script = (await ui.get("/ui/app.js")).text
        assert "innerHTML" not in script and "eval(" not in script

        document = (await ui.get("/openapi/openapi.json")).json()
        live = document["paths"]["/ui/api/live"]["get"]
        assert {p["name"] for p in live["parameters"]} >= {"requests_after", "history_after"}
        schema = json.dumps(live["responses"]["200"])
        assert "LiveState" in schema
        assert "LiveState" in document["components"]["schemas"]
        assert "/ui/api/requests/{request_id}/log" in document["paths"]


async def test_sizes_stay_bounded_after_many_requests(tmp_path):
    async with stack(tmp_path) as s, ui_client(s) as ui:
        for i in range(230):
            assert (await s.client.post("/chat/completions", json=chat(f"n{i}"))).status_code == 200
        live = (await ui.get(LIVE)).json()
        assert len(live["requests"]) == 200 and live["requests"][0]["seq"] == 31 and live["requests_seq"] == 230
        assert len(live["history"]) <= 900
        assert len(s.runtime.history.live) == 0  # every finished request left the live set


def test_the_wheel_ships_the_pages_files(tmp_path):
    """A non-editable install serves the page: its three files are package data in the wheel."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(repo)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("aiosd-*.whl"))).namelist()
    assert {"aiosd/api/ui/index.html", "aiosd/api/ui/app.js", "aiosd/api/ui/app.css"} <= set(names)


async def test_models_the_kernel_does_not_list_show_as_unavailable_with_the_reason(tmp_path):
    extra = 'models: {discover: true, map: {gone: {kernel_model: "no-such-kernel-model"}}}'
    async with stack(tmp_path, extra) as s, ui_client(s) as ui:
        await s.runtime.catalog.refresh()  # the kernel's list is known: "gone" is withheld
        models = {m["id"]: m for m in (await ui.get(LIVE)).json()["models"]}
    assert models["gone"]["available"] is False and "does not list" in models["gone"]["reason"]
    assert models["gone"]["kernel_model"] == "no-such-kernel-model" and models["gone"]["source"] == "map"
    assert models["sonnet"]["available"] is True and models["sonnet"]["reason"] is None


async def test_openclaw_shows_its_file_and_what_the_last_sync_did(tmp_path):
    # openclaw.sync off: the test runs each sync itself, so no sync thread outlives it.
    async with stack(tmp_path, "openclaw: {sync: false, create: true}") as s, ui_client(s) as ui:
        runtime = s.runtime
        assert (await ui.get(LIVE)).json()["openclaw"]["outcome"] is None
        await runtime.sync_openclaw_now()
        openclaw = (await ui.get(LIVE)).json()["openclaw"]
        assert openclaw["path"] == str(tmp_path / "openclaw" / "openclaw.json")
        assert openclaw["outcome"] == "created" and "created" in openclaw["message"]
        await runtime.apply(config_for(tmp_path, s.kernel.url, """
openclaw: {sync: false, create: true}
models: {map: {mock-model: {kernel_model: "gpt-4o-mini"}, opus: {kernel_model: "qwen2.5:7b"}}}
"""))
        await runtime.sync_openclaw_now()
        openclaw = (await ui.get(LIVE)).json()["openclaw"]
    assert openclaw["outcome"] == "written" and "models added: opus" in openclaw["message"]
