"""Cross-site requests and DNS rebinding against the default setup (loopback, no keys): refused before anything runs."""

from __future__ import annotations

import json

import httpx
import pytest

from aiosd.api.error_response import send_response
from aiosd.api.request_guard import AcceptedHosts, guard_settings, request_guard
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.chat_fixtures import FIXTURES
from tests.support.fake_kernel import FakeKernel

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC = {"model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


async def _aiosd(tmp_path, kernel, extra: str = ""):
    return serve_aiosd(config_for(tmp_path, kernel.url, extra))


async def test_the_cross_site_post_of_the_report_is_refused_and_spends_nothing(tmp_path, kernel):
    async with await _aiosd(tmp_path, kernel) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        response = await client.post("/v1/chat/completions", content=json.dumps(CHAT), headers={
            "content-type": "text/plain", "host": "attacker.example", "origin": "http://attacker.example"})
    assert response.status_code in (403, 421), response.text
    assert response.json()["error"]["code"] in ("host_not_allowed", "origin_not_allowed")
    assert kernel.queries == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
async def test_a_post_whose_body_is_not_declared_json_is_415(tmp_path, kernel, content_type):
    headers = {"content-type": content_type} if content_type else {}
    async with await _aiosd(tmp_path, kernel) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        chat = await client.post("/v1/chat/completions", content=json.dumps(CHAT).encode(), headers=headers)
        messages = await client.post("/v1/messages", content=json.dumps(ANTHROPIC).encode(), headers=headers)
    assert chat.status_code == 415, chat.text
    assert chat.json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in chat.json()["error"]["message"]
    assert messages.status_code == 415
    assert messages.json()["type"] == "error"  # Anthropic's error shape on the Anthropic route
    assert "x-request-id" in chat.headers
    assert kernel.queries == []


@pytest.mark.parametrize("path", ["/status", "/v1/models", "/healthz", "/metrics", "/openapi/openapi.json"])
async def test_a_rebinding_page_cannot_read_any_route(tmp_path, kernel, path):
    async with await _aiosd(tmp_path, kernel) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        rebound = await client.get(path, headers={"host": f"attacker.example:{aiosd.runtime.bound_port}"})
        foreign = await client.get(path, headers={"origin": "http://attacker.example"})
        own = await client.get(path)
    assert rebound.status_code == 421, rebound.text
    assert "attacker.example" in rebound.json()["error"]["message"]
    assert "server.allowed_hosts" in rebound.json()["error"]["message"]
    assert foreign.status_code == 403, foreign.text
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    assert "sonnet" not in rebound.text + foreign.text
    assert own.status_code == 200


async def test_a_rebinding_page_cannot_post_either(tmp_path, kernel):
    async with await _aiosd(tmp_path, kernel) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        response = await client.post("/v1/chat/completions", json=CHAT, headers={"host": "attacker.example"})
    assert response.status_code == 421
    assert kernel.queries == []


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.jsonl")))
async def test_openclaw_s_recorded_headers_pass(tmp_path, kernel, fixture):
    record = json.loads((FIXTURES / fixture).read_text().splitlines()[0])
    async with await _aiosd(tmp_path, kernel) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        headers = {k: v for k, v in record["headers"].items() if k not in ("content-length", "host")}
        # OpenClaw names aiosd by the baseUrl aiosd wrote: 127.0.0.1 and the listen port.
        headers["host"] = f"127.0.0.1:{aiosd.runtime.bound_port}"
        body = dict(record["body"], model="sonnet", stream=False)
        response = await client.post(record["path"], content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text[:500]
    assert len(kernel.queries) == 1


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:{port}", "127.0.0.1", "[::1]:{port}", "localhost."])
async def test_aiosd_s_own_names_pass(tmp_path, kernel, host):
    async with await _aiosd(tmp_path, kernel) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        response = await client.get("/v1/models", headers={"host": host.format(port=aiosd.runtime.bound_port)})
    assert response.status_code == 200, response.text


async def test_configured_hosts_and_origins_are_allowed_with_cors(tmp_path, kernel):
    extra = """
server:
  allowed_hosts: ["aiosd.lan"]
  allowed_origins: ["https://dashboard.example:8443"]
"""
    origin = "https://dashboard.example:8443"
    async with await _aiosd(tmp_path, kernel, extra) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        by_name = await client.post("/v1/chat/completions", json=CHAT, headers={"host": "aiosd.lan:8700"})
        from_page = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": origin})
        preflight = await client.request("OPTIONS", "/v1/chat/completions", headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})
        other_page = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": "https://dashboard.example"})
        other_preflight = await client.request("OPTIONS", "/v1/chat/completions", headers={
            "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert by_name.status_code == 200, by_name.text
    assert from_page.status_code == 200, from_page.text
    assert from_page.headers["access-control-allow-origin"] == origin
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert other_page.status_code == 403
    assert other_preflight.status_code == 403 and "access-control-allow-origin" not in other_preflight.headers
    assert len(kernel.queries) == 2


async def test_a_page_aiosd_serves_itself_may_call_it(tmp_path, kernel):
    async with await _aiosd(tmp_path, kernel) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        response = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": aiosd.url})
    assert response.status_code == 200, response.text


async def test_a_name_a_reload_takes_away_is_refused_at_once_though_it_was_accepted_before():
    current = [guard_settings("127.0.0.1", ["aiosd.lan"], [])]

    async def app(scope, receive, send):
        await send_response(send, 200, [], b"ok")

    guarded = request_guard(app, lambda: current[0], lambda path, error: error.message.encode())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(guarded), base_url="http://127.0.0.1") as client:
        before = [await client.get("/", headers={"host": "aiosd.lan:8700"}) for _ in range(2)]
        current[0] = guard_settings("127.0.0.1", [], [])  # the reload's new generation
        after = await client.get("/", headers={"host": "aiosd.lan:8700"})
        own = await client.get("/", headers={"host": "localhost:8700"})
    assert [r.status_code for r in before] == [200, 200]
    assert after.status_code == 421 and "aiosd.lan" in after.text
    assert own.status_code == 200


def test_the_guard_remembers_a_bounded_number_of_hosts_whatever_a_client_sends():
    accepted, settings = AcceptedHosts(), guard_settings("127.0.0.1", [], [])
    for port in range(1, 3000):  # every one of them names aiosd
        assert accepted.allowed(f"localhost:{port}".encode(), settings, None)
        assert len(accepted) <= AcceptedHosts.ENTRIES
    accepted = AcceptedHosts()
    assert accepted.allowed(b"localhost:" + b"0" * 1000 + b"8700", settings, None)
    assert not accepted.allowed(b"attacker.example", settings, None)
    assert not accepted.allowed(b"attacker.example", settings, None)
    assert len(accepted) == 0  # neither an over-long value nor a refused one is kept
