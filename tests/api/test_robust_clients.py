"""Robustness against clients: malformed, oversized and huge valid requests; disconnects at any stage leak nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct

import httpx
import pytest

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel, Hang, LLMFailure, Text
from tests.support.robust import (
    assert_idle,
    assert_openai_error,
    connections_from_clients_to,
    connections_to,
    eventually,
    other_tasks,
)

MAX_BODY = 2_000_000  # above the 1 MB system prompt below, far below the 32 MB default
CONFIG = f"server: {{max_body_bytes: {MAX_BODY}}}\n"
HELLO = {"model": "sonnet", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


def aiosd_failures(caplog) -> list[logging.LogRecord]:
    """Errors and tracebacks aiosd's own thread logged (the fake kernel logs from its thread)."""
    return [r for r in caplog.records if r.threadName == "MainThread" and (r.levelno >= logging.ERROR or r.exc_info)]


# --- malformed, oversized and huge requests --------------------------------------------------


@pytest.mark.parametrize("body", [
    b"", b"{", b"nul", b"[]", b"null", b"42", b'"text"', b"\xff\xfe\x00", b"{'model': 'sonnet'}",
    json.dumps(HELLO).encode() + b"}", json.dumps(HELLO).encode()[:-5], b"[" * 100_000 + b"]" * 100_000,
    b'{"model": "sonnet", "messages": [{"role": "user", "content": "hi"}], "stream": NaN}',
], ids=lambda b: repr(b[:24]))
async def test_malformed_json_gets_400_with_an_openai_error_and_nothing_reaches_the_kernel(tmp_path, kernel, body,
                                                                                           caplog):
    async with (
        serve_aiosd(config_for(tmp_path, kernel.url, CONFIG)) as aiosd,
        httpx.AsyncClient(base_url=aiosd.base_url) as client,
    ):
        response = await client.post("/chat/completions", content=body, headers={"content-type": "application/json"})
        error = assert_openai_error(response, 400)
        assert error["type"] == "invalid_request_error"
        assert (await client.post("/chat/completions", json=HELLO)).status_code == 200
    assert kernel.query_count == 1  # only the good request
    assert not aiosd_failures(caplog)


async def test_a_body_over_max_body_bytes_gets_413_with_or_without_content_length(tmp_path, kernel):
    async def chunked(total: int):
        sent = 0
        while sent < total:
            yield b" " * 100_000
            sent += 100_000

    async with (
        serve_aiosd(config_for(tmp_path, kernel.url, CONFIG)) as aiosd,
        httpx.AsyncClient(base_url=aiosd.base_url, timeout=30) as client,
    ):
        json_body = {"content-type": "application/json"}
        declared = await client.post("/chat/completions", content=b" " * (MAX_BODY + 1), headers=json_body)
        streamed = await client.post("/chat/completions", content=chunked(MAX_BODY * 3), headers=json_body)
        for response in (declared, streamed):
            assert assert_openai_error(response, 413)["code"] == "request_too_large"
        assert (await client.post("/chat/completions", json=HELLO)).status_code == 200
    assert kernel.query_count == 1


async def test_a_1mb_system_prompt_reaches_the_kernel_whole(tmp_path, kernel):
    system = "You are a careful agent. " * 42_000  # 1.05 MB
    async with (
        serve_aiosd(config_for(tmp_path, kernel.url, CONFIG)) as aiosd,
        httpx.AsyncClient(base_url=aiosd.base_url, timeout=30) as client,
    ):
        response = await client.post("/chat/completions", json={
            "model": "sonnet", "messages": [{"role": "system", "content": system}, {"role": "user", "content": "go"}]})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["choices"][0]["message"]["content"] == "echo: go"
    sent = kernel.queries[-1]["query_data"]["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith(system)


@pytest.mark.parametrize("tool_mode", ["prompt", "native"])
async def test_thousands_of_tools_are_offered_and_a_call_to_the_last_one_comes_back(tmp_path, kernel, tool_mode):
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}", "description": f"Does thing number {i}.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
        for i in range(3000)]
    if tool_mode == "prompt":
        kernel.script(Text('<function_calls><invoke name="tool_2999"><parameter name="path">a</parameter></invoke>'
                           '</function_calls>'))
    else:
        kernel.script(Text('{"name": "tool_2999", "arguments": {"path": "a"}}'))
    config = config_for(tmp_path, kernel.url, CONFIG + f"models: {{defaults: {{tools: {tool_mode}}}}}")
    async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.base_url, timeout=30) as client:
        response = await client.post("/chat/completions", json={
            "model": "sonnet", "messages": [{"role": "user", "content": "use the last tool"}], "tools": tools})
    assert response.status_code == 200, response.text[:300]
    call = response.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    assert (call["name"], json.loads(call["arguments"])) == ("tool_2999", {"path": "a"})
    sent = json.dumps(kernel.queries[-1]["query_data"])
    assert "tool_0" in sent and "tool_2999" in sent


# --- disconnects at every stage ------------------------------------------------------------------


class RawClient:
    """An HTTP/1.1 client on a bare socket, so a test decides exactly when the connection dies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, body: bytes, *, declared_length: int | None = None, send_only: int | None = None) -> None:
        length = len(body) if declared_length is None else declared_length
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                f"content-length: {length}\r\n\r\n").encode()
        self.writer.write(head + body[:send_only])

    def reset(self) -> None:
        """Close with a TCP RST, as a killed client does."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def chat_body(text: str = "hello", **extra) -> bytes:
    return json.dumps({"model": "sonnet", "messages": [{"role": "user", "content": text}], **extra}).encode()


async def assert_nothing_leaked(aiosd, kernel, baseline_tasks, caplog) -> None:
    """No request task, no client connection, no kernel slot or queue place, and no error logged."""
    await eventually(lambda: not other_tasks(baseline_tasks), what="aiosd's request tasks ending")
    await eventually(lambda: connections_from_clients_to(aiosd.runtime.config.listen_port) == 0,
                     what="aiosd closing the client's connection")
    assert_idle(aiosd)
    await kernel.wait_until_async(lambda k: k.in_flight == 0, what="no /query open at the kernel")
    assert not aiosd_failures(caplog)
    # And aiosd still serves.
    async with httpx.AsyncClient(base_url=aiosd.base_url) as client:
        response = await client.post("/chat/completions", json=HELLO)
    assert response.status_code == 200
    await eventually(lambda: not other_tasks(baseline_tasks), what="the check request's task ending")


@pytest.mark.parametrize("hard", [True, False], ids=["reset", "close"])
async def test_disconnect_before_the_body_is_complete(tmp_path, kernel, caplog, hard):
    async with serve_aiosd(config_for(tmp_path, kernel.url, CONFIG)) as aiosd:
        baseline = set(asyncio.all_tasks())
        client = await RawClient.connect(aiosd.runtime.config.listen_port)
        client.send(chat_body(), declared_length=100_000, send_only=10)
        await client.writer.drain()
        await eventually(lambda: connections_from_clients_to(aiosd.runtime.config.listen_port) == 1)
        client.reset() if hard else client.writer.close()
        await assert_nothing_leaked(aiosd, kernel, baseline, caplog)
    assert kernel.query_count == 1  # only the check request


async def test_disconnect_while_queued_gives_up_the_place_and_never_calls_the_kernel(tmp_path, kernel, caplog):
    hang = Hang()
    kernel.script(hang)
    config = config_for(tmp_path, kernel.url,
                        CONFIG + 'kernel: {max_concurrency: 1, timeout: "10s", queue_timeout: "10s"}')
    async with serve_aiosd(config) as aiosd:
        baseline = set(asyncio.all_tasks())
        async with httpx.AsyncClient(base_url=aiosd.base_url, timeout=30) as holder:
            first = asyncio.create_task(holder.post("/chat/completions", json=HELLO))
            await kernel.wait_for_in_flight_async(1)
            queued = await RawClient.connect(aiosd.runtime.config.listen_port)
            queued.send(chat_body("queued"))
            await eventually(lambda: aiosd.runtime.scheduler.queued == 1, what="the second request queueing")
            queued.reset()
            await eventually(lambda: aiosd.runtime.scheduler.queued == 0, what="the queue place being given up")
            assert aiosd.runtime.scheduler.in_flight == 1  # the hung call still holds its slot
            hang.release()
            assert (await first).status_code == 200
        await assert_nothing_leaked(aiosd, kernel, baseline, caplog)
    assert [q["query_data"]["messages"][-1]["content"] for q in kernel.queries] == ["hello", "hello"]


async def test_disconnect_while_the_kernel_call_runs_cancels_the_call(tmp_path, kernel, caplog):
    kernel.script(Hang())
    config = config_for(tmp_path, kernel.url, CONFIG + 'kernel: {timeout: "10s"}')
    async with serve_aiosd(config) as aiosd:
        baseline = set(asyncio.all_tasks())
        client = await RawClient.connect(aiosd.runtime.config.listen_port)
        client.send(chat_body())
        await kernel.wait_for_in_flight_async(1)
        client.reset()
        # aiosd hung up on the kernel (the real kernel's work goes on, but aiosd's slot is free).
        await kernel.wait_for_disconnects_async(1)
        await assert_nothing_leaked(aiosd, kernel, baseline, caplog)


async def test_disconnect_during_a_retry_wait_ends_the_request_at_once(tmp_path, kernel, caplog):
    kernel.script(LLMFailure(429))
    config = config_for(tmp_path, kernel.url, CONFIG + 'retry: {budget: "60s", backoff: {initial: "30s", max: "30s"}}\n'
                                                       'kernel: {timeout: "10s"}')
    async with serve_aiosd(config) as aiosd:
        baseline = set(asyncio.all_tasks())
        client = await RawClient.connect(aiosd.runtime.config.listen_port)
        client.send(chat_body())
        await eventually(lambda: len(aiosd.runtime.retry_times) == 1, what="the first attempt failing with 429")
        assert aiosd.runtime.scheduler.in_flight == 0  # a request waiting to retry holds no kernel slot
        client.reset()
        await assert_nothing_leaked(aiosd, kernel, baseline, caplog)  # well before the 30 s wait is over
    assert kernel.query_count == 2  # the failed attempt and the check request: no retry after the client left


@pytest.mark.parametrize("hard", [True, False], ids=["reset", "close"])
async def test_disconnect_mid_stream(tmp_path, kernel, caplog, hard):
    # One answer of 8 MB from a kernel without a cap, sent whole (not continued: it ends mid-word).
    kernel.answer_token_cap = None
    kernel.script(Text("x" * 8_000_000))  # far more than the socket buffers hold: the stream must stall
    async with serve_aiosd(config_for(tmp_path, kernel.url, CONFIG + "continuation: {enabled: false}\n")) as aiosd:
        baseline = set(asyncio.all_tasks())
        client = await RawClient.connect(aiosd.runtime.config.listen_port)
        client.send(chat_body(stream=True))
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"text/event-stream" in head
        assert (await client.reader.readexactly(6)) == b"data: "  # the stream has begun
        client.reset() if hard else client.writer.close()
        await assert_nothing_leaked(aiosd, kernel, baseline, caplog)


async def test_many_clients_vanishing_at_random_stages_leak_nothing(tmp_path, kernel, caplog):
    """A burst of clients, each cut off at a different point, then the counters: all back to zero."""
    from tests.support.fake_kernel import Delay

    kernel.script(*[Delay(0.05) for _ in range(30)])
    config = config_for(tmp_path, kernel.url, CONFIG + 'kernel: {max_concurrency: 3}')
    async with serve_aiosd(config) as aiosd:
        port = aiosd.runtime.config.listen_port
        baseline = set(asyncio.all_tasks())
        clients = []
        for i in range(30):
            client = await RawClient.connect(port)
            body = chat_body(f"client {i}", stream=bool(i % 2))
            client.send(body, send_only=None if i % 3 else len(body) // 2)
            clients.append(client)
        await eventually(lambda: kernel.query_count >= 3, what="the first calls reaching the kernel")
        for i, client in enumerate(clients):
            client.reset() if i % 2 else client.writer.close()
        await assert_nothing_leaked(aiosd, kernel, baseline, caplog)
    assert connections_to(kernel.port) == 0
