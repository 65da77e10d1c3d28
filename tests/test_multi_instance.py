"""packaging/multi-instance/haproxy.cfg works as shipped: HAProxy sends requests only to ready instances.

HAProxy checks /readyz and leaves an aiosd instance that is not ready out.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.fake_kernel import FakeKernel

CONFIG = Path(__file__).resolve().parents[1] / "packaging" / "multi-instance" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or (Path("/usr/sbin/haproxy") if Path("/usr/sbin/haproxy").exists() else None)
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")
CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}


def test_the_shipped_config_is_valid():
    result = subprocess.run([str(HAPROXY), "-c", "-f", str(CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_requests_go_only_to_the_instance_whose_readyz_is_200(tmp_path):
    front = free_port()
    with FakeKernel() as kernel:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        alive = config_for(tmp_path / "a", kernel.url, "models: {discover: true}")
        dead = config_for(tmp_path / "b", f"http://127.0.0.1:{free_port()}", "models: {discover: true}")
        async with serve_aiosd(alive) as a, serve_aiosd(dead) as b:
            text = (CONFIG.read_text()
                    .replace("127.0.0.1:8800", f"127.0.0.1:{front}")
                    .replace("127.0.0.1:8701", f"{a.runtime.config.listen}")
                    .replace("127.0.0.1:8702", f"{b.runtime.config.listen}")
                    .replace("inter 2s fall 2 rise 2", "inter 100ms fall 1 rise 1"))
            path = tmp_path / "haproxy.cfg"
            path.write_text(text)
            proxy = subprocess.Popen([str(HAPROXY), "-db", "-f", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=10) as client:
                    # HAProxy's first checks run within a few intervals; until then it may still try B.
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 10
                    while True:
                        try:
                            statuses = [(await client.post("/v1/chat/completions", json=CHAT)).status_code
                                        for _ in range(10)]
                        except httpx.TransportError:
                            statuses = []
                        if statuses == [200] * 10 or loop.time() > deadline:
                            break
                        await asyncio.sleep(0.1)
                    answered_before = kernel.query_count
                    statuses = [(await client.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(20)]
            finally:
                proxy.terminate()
                proxy.wait(5)
    assert statuses == [200] * 20
    assert kernel.query_count == answered_before + 20  # all through the ready instance
