"""A real daemon under requests while its config file is edited, deleted, replaced and half-written.

No request fails, and the last good config wins.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import httpx
import pytest

from tests.support.aiosd_harness import free_port
from tests.support.daemon_process import (
    close_daemon,
    daemon_config,
    start_daemon,
    write_by_rename,
)
from tests.support.fake_kernel import FakeKernel

# Every config version keeps "sonnet", so a request for it fails only if a reload goes wrong.
BASE_MODELS = {"sonnet": "gpt-4o-mini"}


@pytest.fixture
def kernel():
    with FakeKernel(record=False) as fake:
        yield fake


@pytest.fixture
def daemon(tmp_path, kernel):
    port = free_port()
    running = start_daemon(tmp_path, daemon_config(kernel.url, port, models=BASE_MODELS), port)
    # Read every sd_notify datagram as systemd does: aiosd's notify send blocks its event loop once
    # the socket's queue (net.unix.max_dgram_qlen, 10 by default) is full of unread messages.
    done = threading.Event()

    def read_notifications() -> None:
        while not done.is_set():
            running.notify.receive(0.05)

    reader = threading.Thread(target=read_notifications, name="systemd-notify-reader")
    reader.start()
    yield running
    done.set()
    reader.join()
    close_daemon(running)


def config_text(daemon, kernel, **more_models: str) -> str:
    return daemon_config(kernel.url, daemon.port, models={**BASE_MODELS, **more_models})


class SteadyTraffic:
    """Requests for "sonnet" back to back from several clients, every outcome recorded."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.clients = clients
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> SteadyTraffic:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]
        await self.wait_for_requests(self.clients)  # traffic really flows before the file is touched
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        target = self.ok + len(self.failures) + n
        while self.ok + len(self.failures) < target:
            assert time.monotonic() < deadline, f"fewer than {n} requests within {timeout}s"
            await asyncio.sleep(0.01)

    async def _client(self, index: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                text = f"client {index} request {n}"
                try:
                    response = await client.post("/v1/chat/completions", json={
                        "model": "sonnet", "messages": [{"role": "user", "content": text}]})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{text}: {exc!r}")
                    continue
                answer = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else None
                if answer == f"echo: {text}":
                    self.ok += 1
                else:
                    self.failures.append(f"{text}: {response.status_code} {response.text[:200]}")


async def serving_models(daemon) -> set[str]:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            response = await client.get(daemon.url + "/v1/models")
        except httpx.HTTPError as exc:
            log = "\n".join(line for line in daemon.process.stderr_lines() if "answered in" not in line)
            raise AssertionError(f"GET /v1/models: {exc!r}; aiosd log:\n" + log[-6000:]) from None
    return {m["id"] for m in response.json()["data"]}


async def wait_for_models(daemon, expected: set[str], timeout: float = 10.0) -> None:
    """Until /v1/models lists exactly ``expected`` (the daemon is another process: no event to await here)."""
    deadline = time.monotonic() + timeout
    while (models := await serving_models(daemon)) != expected:
        assert time.monotonic() < deadline, (
            f"serving {sorted(models)}, not {sorted(expected)}:\n{daemon.process.stderr_text()[-3000:]}")
        await asyncio.sleep(0.02)


async def wait_for_refused_reload(daemon, timeout: float = 10.0) -> dict:
    """The daemon tried the file, refused it and said so in /status (READY=1 after RELOADING=1)."""
    deadline = time.monotonic() + timeout
    while True:
        async with httpx.AsyncClient(timeout=5) as client:
            last = (await client.get(daemon.url + "/status")).json()["config"]["last_reload"]
        if last is not None and last["ok"] is False:
            return last
        assert time.monotonic() < deadline, (
            f"no refused reload within {timeout}s:\n{daemon.process.stderr_text()[-3000:]}")
        await asyncio.sleep(0.02)


def assert_no_failures(traffic: SteadyTraffic) -> None:
    assert not traffic.failures, (
        f"{len(traffic.failures)} of {traffic.ok + len(traffic.failures)} failed: {traffic.failures[:5]}")
    assert traffic.ok >= 20  # requests really flowed during the edits


async def test_dozens_of_edits_within_a_second_end_on_the_last_one(daemon, kernel):
    async with SteadyTraffic(daemon.url) as traffic:
        for i in range(40):
            text = config_text(daemon, kernel, **{f"edit-{i}": "qwen2.5:7b"})
            if i % 2:
                write_by_rename(daemon.config_path, text)
            else:
                daemon.config_path.write_text(text, encoding="utf-8")  # in place, as `echo >` does
            await asyncio.sleep(0.02)  # the pace of a deploy tool rewriting the file, not waiting on aiosd
        await wait_for_models(daemon, {"sonnet", "edit-39"})
        await traffic.wait_for_requests(10)
    assert_no_failures(traffic)
    assert daemon.status()["config"]["last_reload"]["ok"] is True


async def test_deleting_the_file_keeps_serving_and_recreating_it_applies_it(daemon, kernel):
    async with SteadyTraffic(daemon.url) as traffic:
        daemon.config_path.unlink()
        refused = await wait_for_refused_reload(daemon)
        assert any(p.startswith("no config at") and "deleted or moved away" in p for p in refused["problems"])
        await traffic.wait_for_requests(10)  # still serving the last good config
        daemon.config_path.write_text(config_text(daemon, kernel, recreated="qwen2.5:7b"), encoding="utf-8")
        await wait_for_models(daemon, {"sonnet", "recreated"})
        await traffic.wait_for_requests(10)
    assert_no_failures(traffic)


async def test_an_unreadable_config_path_keeps_the_last_good_config(daemon, kernel):
    """Permission flips. aiosd's tests run as root here, where mode bits do not stop a read, so an
    unreadable file is emulated by a directory where the file was; chmod 000 is flipped too, and as
    root the daemon simply reads the (valid) file."""
    async with SteadyTraffic(daemon.url) as traffic:
        daemon.config_path.write_text(config_text(daemon, kernel, flipped="qwen2.5:7b"), encoding="utf-8")
        os.chmod(daemon.config_path, 0)
        if os.geteuid() == 0:
            await wait_for_models(daemon, {"sonnet", "flipped"})
        else:
            assert any("permission denied" in p for p in (await wait_for_refused_reload(daemon))["problems"])
        os.chmod(daemon.config_path, 0o644)

        daemon.config_path.unlink()
        daemon.config_path.mkdir()
        await traffic.wait_for_requests(10)
        refused = await wait_for_refused_reload(daemon)
        assert any("directory" in p for p in refused["problems"]), refused
        await traffic.wait_for_requests(10)

        daemon.config_path.rmdir()
        write_by_rename(daemon.config_path, config_text(daemon, kernel, restored="qwen2.5:7b"))
        await wait_for_models(daemon, {"sonnet", "restored"})
        await traffic.wait_for_requests(10)
    assert_no_failures(traffic)


async def test_an_invalid_file_is_refused_while_requests_flow(daemon, kernel):
    async with SteadyTraffic(daemon.url) as traffic:
        write_by_rename(daemon.config_path, config_text(daemon, kernel) + "kernel: {max_concurrency: zero}\n")
        refused = await wait_for_refused_reload(daemon)
        assert refused["problems"]
        await traffic.wait_for_requests(10)
        write_by_rename(daemon.config_path, config_text(daemon, kernel, fixed="qwen2.5:7b"))
        await wait_for_models(daemon, {"sonnet", "fixed"})
    assert_no_failures(traffic)


async def test_a_half_written_file_is_refused_and_the_completed_one_applied(daemon, kernel):
    complete = config_text(daemon, kernel, half="qwen2.5:7b")
    cut = complete.index('half: {kernel_model: "qwen') + len('half: {kernel_model: "qwen')  # inside a quoted value
    async with SteadyTraffic(daemon.url) as traffic:
        with open(daemon.config_path, "w", encoding="utf-8") as f:  # in place, as a slow writer would
            f.write(complete[:cut])
            f.flush()
            # The writer stalls longer than the reload debounce: aiosd reads the truncated file.
            refused = await wait_for_refused_reload(daemon)
            assert any("YAML" in p for p in refused["problems"]), refused
            await traffic.wait_for_requests(10)
            f.write(complete[cut:])
        await wait_for_models(daemon, {"sonnet", "half"})
        await traffic.wait_for_requests(10)
    assert_no_failures(traffic)


async def test_a_file_truncated_by_a_stalled_writer_is_not_taken_for_every_default(daemon, kernel):
    # At start an empty file is all defaults; under a running daemon it is an unfinished write,
    # and applying it would drop every mapped model (and OpenClaw's rows for them).
    complete = config_text(daemon, kernel, later="qwen2.5:7b")
    async with SteadyTraffic(daemon.url) as traffic:
        with open(daemon.config_path, "w", encoding="utf-8") as f:  # in place: truncated first
            f.flush()
            refused = await wait_for_refused_reload(daemon)
            assert any("the file is empty (or only comments); not applied to the running daemon" in p
                       for p in refused["problems"]), refused
            await traffic.wait_for_requests(10)
            f.write(complete)
        await wait_for_models(daemon, {"sonnet", "later"})
    assert_no_failures(traffic)
