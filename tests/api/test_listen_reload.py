"""Reloads while bound: the socket aiosd listens on is fixed until a restart; all is judged and described by it."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.aiosd_harness import free_port
from tests.support.daemon_process import close_daemon, daemon_config, start_daemon, write_by_rename
from tests.support.fake_kernel import FakeKernel

KEY = "test-key-0123456789"


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


def chat(url: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers=headers, timeout=20,
                      json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]})


def test_a_reload_dropping_auth_while_bound_to_a_public_address_is_refused(tmp_path, kernel):
    port = free_port()
    public = daemon_config(kernel.url, port, extra=f'auth: {{keys: ["{KEY}"]}}\n').replace(
        f'listen: "127.0.0.1:{port}"', f'listen: "0.0.0.0:{port}"')
    daemon = start_daemon(tmp_path, public, port)
    try:
        # Loopback connections reach the 0.0.0.0 socket too.
        assert chat(daemon.url).status_code == 401
        # Valid on its own (a loopback listen needs no keys), but aiosd stays on 0.0.0.0 until a restart.
        write_by_rename(daemon.config_path, daemon_config(kernel.url, port))
        _, ready = daemon.wait_for_reload()
        assert "REFUSED" in ready["STATUS"], ready["STATUS"]
        assert "0.0.0.0" in ready["STATUS"]

        refused = chat(daemon.url)
        assert refused.status_code == 401, refused.text
        assert chat(daemon.url, {"authorization": f"Bearer {KEY}"}).status_code == 200
        status = httpx.get(daemon.url + "/status", headers={"authorization": f"Bearer {KEY}"}, timeout=5).json()
        assert status["config"]["generation"] == 1
        assert status["config"]["last_reload"]["ok"] is False
        errors = [line for line in daemon.process.stderr_lines() if line.startswith("<3>")]
        assert any("0.0.0.0" in line and "auth.keys" in line for line in errors), errors
        assert any("refused" in line and "still serving generation 1" in line for line in errors), errors

        # Keeping the keys (or saying allow_remote) is accepted: the rule holds on the bound socket.
        write_by_rename(daemon.config_path,
                        daemon_config(kernel.url, port, extra="allow_remote: true\n"))
        # Under load the watcher may have split the first edit's events into two reloads (both
        # refused): the acceptance is the first READY that is not a refusal.
        for _ in range(3):
            _, ready = daemon.wait_for_reload()
            if "REFUSED" not in ready["STATUS"]:
                break
        assert "REFUSED" not in ready["STATUS"], ready["STATUS"]
    finally:
        close_daemon(daemon)


def wait_for_sync_after(daemon, at: float, timeout: float = 10.0) -> dict:
    """/status once an OpenClaw sync has finished after wall-clock ``at``."""
    deadline = time.monotonic() + timeout
    while True:
        status = daemon.status()
        sync = status["openclaw_sync"]
        if sync is not None and sync["at"] >= at:
            return status
        assert time.monotonic() < deadline, f"no OpenClaw sync after the reload: {status}"
        daemon.notify.receive(0.1)  # paces the polling; a STATUS datagram may end it early


def test_a_reload_changing_the_port_keeps_describing_the_bound_one(tmp_path, kernel):
    port, new_port = free_port(), free_port()
    openclaw_json = tmp_path / "openclaw" / "openclaw.json"
    text = daemon_config(kernel.url, port).replace(
        "openclaw: {sync: false}", f'openclaw: {{sync: true, create: true, config_path: "{openclaw_json}"}}')
    daemon = start_daemon(tmp_path, text, port)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        first = wait_for_sync_after(daemon, 0)
        assert json.loads(openclaw_json.read_text())["models"]["providers"]["aios"]["baseUrl"] == base_url

        write_by_rename(daemon.config_path, text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{new_port}"))
        _, ready = daemon.wait_for_reload()
        assert "REFUSED" not in ready["STATUS"], ready["STATUS"]
        status = wait_for_sync_after(daemon, daemon.status()["config"]["last_reload"]["at"])
        assert status["config"]["generation"] == first["config"]["generation"] + 1

        # OpenClaw is still sent to the port aiosd listens on, not to one nobody listens on yet.
        provider = json.loads(openclaw_json.read_text())["models"]["providers"]["aios"]
        assert provider["baseUrl"] == base_url
        assert status["config"]["listen"] == f"127.0.0.1:{port}"
        assert status["config"]["listen_pending"] == f"127.0.0.1:{new_port}"
        assert any(f"127.0.0.1:{new_port}" in note and "restart" in note and f"127.0.0.1:{port}" in note
                   for note in status["config"]["last_reload"]["notes"])
        assert chat(daemon.url).status_code == 200

        # Back to the bound address: nothing is pending any more.
        write_by_rename(daemon.config_path, text)
        daemon.wait_for_reload()
        assert daemon.status()["config"]["listen_pending"] is None
    finally:
        close_daemon(daemon)
