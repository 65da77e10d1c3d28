"""The lean wire's own behaviour beyond the hostile-kernel tests every wire runs (test_client.py,
test_robust_answer_size.py): which URLs it takes, what it sends, its pool's bounds, heads that
never end, bytes nobody asked for, answers delimited by closing, idle connections dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from aiosd.errors import KernelTimeout, KernelUnreachable
from aiosd.kernel import lean_wire
from aiosd.kernel.client import QUERY_PATH, KernelClient
from aiosd.kernel.lean_wire import MAX_HEAD_BYTES, LeanWire
from aiosd.kernel.wires import EXTRA_CONNECTIONS, AiohttpWire
from tests.support.kernel_calls import kernel_settings, real_body
from tests.support.robust import connections_to, eventually

ANSWER = b'{"response": {"response_message": "ok", "finished": true, "status_code": 200}}'
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)


class RawKernel:
    """A TCP server that reads each request head and body and answers with ``answer(request)``
    bytes (or waits on ``gate`` first); it records the requests and the peak of open connections."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.open = 0
        self.peak = 0
        self.gate: asyncio.Event | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                if self.gate is not None:
                    await self.gate.wait()
                reply = self.answer(head)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.split(b"\r\n\r\n")[0].lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def raw_kernel() -> AsyncIterator[Callable[[Callable[[bytes], bytes | None]], RawKernel]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[bytes], bytes | None]) -> RawKernel:
        kernel = RawKernel(answer)
        server = await asyncio.start_server(kernel.handle, "127.0.0.1", 0)
        kernel.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return kernel

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize(
    ("url", "lean"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://kernel.lan/aios/", True),
        ("https://kernel.lan", False),
        ("http://user:secret@kernel.lan", False),  # aiohttp sends the Basic credentials
        ("http://kernel.lan/?x=1", False),
        ("http://kérnel.lan", False),  # needs IDNA
    ],
)
async def test_plain_http_kernels_get_the_lean_wire_and_any_other_url_aiohttp(url, lean):
    async with KernelClient(kernel_settings(url), transport="lean") as client:
        assert isinstance(client._wire, LeanWire if lean else AiohttpWire)


async def test_the_request_says_what_the_other_wires_say_under_the_urls_path(raw_kernel):
    kernel = await raw_kernel(lambda head: OK)
    async with KernelClient(kernel_settings(kernel.url + "/aios/"), transport="lean") as client:
        assert (await client.query(real_body("hi"), timeout=5))["response_message"] == "ok"
        await client.query(real_body("again"), timeout=5)
    head, _, body = kernel.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == f"post /aios{QUERY_PATH} http/1.1"
    assert f"host: 127.0.0.1:{kernel.port}" in lines and "accept-encoding: identity" in lines
    assert "content-type: application/json" in lines and f"content-length: {len(body)}" in lines
    assert b'"hi"' in body
    assert len(kernel.writers) == 1  # the second call reused the connection


async def test_the_pool_never_opens_more_than_its_size_and_a_waiter_given_up_frees_nothing_twice(raw_kernel):
    kernel = await raw_kernel(lambda head: OK)
    kernel.gate = asyncio.Event()
    size = 1 + EXTRA_CONNECTIONS
    async with KernelClient(kernel_settings(kernel.url, max_concurrency=1), transport="lean") as client:
        calls = [asyncio.create_task(client.query(real_body(str(i)), timeout=5)) for i in range(3 * size)]
        await eventually(lambda: len(kernel.requests) == size, what="the pool's connections all carrying a call")
        # One more call gives up while waiting for a place (its deadline).
        with pytest.raises(KernelTimeout):
            await client.query(real_body("impatient"), timeout=0.2)
        kernel.gate.set()
        answers = await asyncio.gather(*calls)
        assert all(answer["response_message"] == "ok" for answer in answers)
        assert kernel.peak == size
        assert (await client.query(real_body("after"), timeout=5))["response_message"] == "ok"
        assert kernel.peak == size and len(kernel.writers) == size  # every connection was kept and reused


async def test_a_head_that_never_ends_is_not_http_and_bounded(raw_kernel):
    endless = b"HTTP/1.1 200 OK\r\n" + b"x-padding: " + b"a" * (4 * MAX_HEAD_BYTES)
    kernel = await raw_kernel(lambda head: endless)
    async with KernelClient(kernel_settings(kernel.url), transport="lean") as client:
        with pytest.raises(KernelUnreachable, match="not valid HTTP"):
            await client.query(real_body(), timeout=5)


async def test_an_answer_delimited_by_closing_the_connection_is_read_whole(raw_kernel):
    kernel = await raw_kernel(lambda head: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + ANSWER)
    async with KernelClient(kernel_settings(kernel.url), transport="lean") as client:
        assert (await client.query(real_body(), timeout=5))["response_message"] == "ok"
        assert (await client.query(real_body(), timeout=5))["response_message"] == "ok"  # on a new connection
    assert len(kernel.writers) == 2


async def test_a_connection_closed_before_the_answer_says_so(raw_kernel):
    kernel = await raw_kernel(lambda head: None)
    async with KernelClient(kernel_settings(kernel.url), transport="lean") as client:
        with pytest.raises(KernelUnreachable, match="closed the connection without answering"):
            await client.query(real_body(), timeout=5)


async def test_bytes_nobody_asked_for_drop_the_connection_and_the_next_call_gets_a_new_one(raw_kernel):
    kernel = await raw_kernel(lambda head: OK)
    async with KernelClient(kernel_settings(kernel.url), transport="lean") as client:
        await client.query(real_body(), timeout=5)
        kernel.writers[0].write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # while idle
        await eventually(lambda: connections_to(kernel.port) == 0, what="the lean wire dropping the connection")
        assert (await client.query(real_body("after"), timeout=5))["response_message"] == "ok"
    assert len(kernel.writers) == 2


async def test_idle_connections_are_closed_before_the_kernel_would(raw_kernel, monkeypatch):
    monkeypatch.setattr(lean_wire, "KEEPALIVE", 0.05)
    kernel = await raw_kernel(lambda head: OK)
    async with KernelClient(kernel_settings(kernel.url), transport="lean") as client:
        await client.query(real_body(), timeout=5)
        assert connections_to(kernel.port) == 1
        await eventually(lambda: connections_to(kernel.port) == 0, what="the idle connection being closed")
        assert (await client.query(real_body("after"), timeout=5))["response_message"] == "ok"


async def test_a_kept_alive_connection_closed_while_idle_is_not_the_kernels_failure(raw_kernel):
    """The kernel closes a kept-alive connection just as the next call goes out on it (its keep-alive
    timeout, or a restart): the call goes once more on a new connection instead of failing. A new
    connection closed without an answer is still the kernel's failure (the test above)."""
    replies = iter([OK, None, OK])
    kernel = await raw_kernel(lambda head: next(replies))
    async with KernelClient(kernel_settings(kernel.url), transport="lean") as client:
        await client.query(real_body(), timeout=5)
        assert (await client.query(real_body("after"), timeout=5))["response_message"] == "ok"
    assert len(kernel.writers) == 2 and len(kernel.requests) == 3
