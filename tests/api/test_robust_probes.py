"""Who may read /metrics and /readyz: a key when auth.keys is set, unless server.open_metrics lets loopback in."""

from __future__ import annotations

import httpx
import pytest

from aiosd.api.app import build_app
from aiosd.service.runtime import Runtime
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel

KEY = "sk-test-0123456789"
PROBES = ("/metrics", "/readyz")


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


async def test_metrics_and_readiness_need_a_key_when_auth_keys_are_set(tmp_path, kernel):
    """Issue 18 item 9: with auth.keys, /metrics and /readyz (key names, kernel addresses, model ids,
    the kernel's failure text) answer 401 without a key, like /status; before, 200 and 503 to anyone."""
    config = config_for(tmp_path, kernel.url, f'auth: {{keys: [{{key: "{KEY}", name: team}}]}}')
    async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        anonymous = [await client.get(path) for path in PROBES]
        keyed = [await client.get(path, headers={"authorization": f"Bearer {KEY}"}) for path in PROBES]
        liveness = await client.get("/healthz")
    for response in anonymous:
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert "team" not in response.text and "127.0.0.1:" not in response.text
    assert keyed[0].status_code == 200 and "aiosd_requests_total" in keyed[0].text
    assert keyed[1].status_code in (200, 503) and "ready" in keyed[1].json()
    assert liveness.status_code == 200  # says nothing about anything: stays open


async def test_open_metrics_loopback_opens_them_to_loopback_clients_only(tmp_path, kernel):
    """Issue 18 item 9: `server.open_metrics: loopback` lets a local scraper or health check in without a
    key; a client on any other address still needs one."""
    config = config_for(tmp_path, kernel.url, f'auth: {{keys: ["{KEY}"]}}\nserver: {{open_metrics: loopback}}')
    async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        local = [(await client.get(path)).status_code for path in PROBES]
        status = (await client.get("/status")).status_code  # the opt-out is for the probes only
    runtime = Runtime(config)
    remote_transport = httpx.ASGITransport(app=build_app(runtime), client=("192.0.2.7", 40000))
    async with httpx.AsyncClient(transport=remote_transport, base_url="http://127.0.0.1") as remote:
        from_elsewhere = [(await remote.get(path)).status_code for path in PROBES]
    assert local[0] == 200 and local[1] in (200, 503)
    assert status == 401
    assert from_elsewhere == [401, 401]


async def test_without_keys_the_probes_stay_open(tmp_path, kernel):
    """Issue 18 item 9: without auth.keys (loopback only, by default) nothing changes for scrapers."""
    async with serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as c:
        assert [(await c.get(path)).status_code in (200, 503) for path in PROBES] == [True, True]
