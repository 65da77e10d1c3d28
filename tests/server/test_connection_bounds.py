"""Issue 18's connection bounds: pipelined requests, every head under the cap, body drips, overload answers.

Each test reproduces a bounded version of an attack on loopback against a real aiosd (in the test's
loop, or as a process where its memory is the figure) and asserts what a client or the operator sees.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket

import httpx
import pytest

from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.daemon_process import close_daemon, daemon_config, start_daemon
from tests.support.fake_kernel import FakeKernel
from tests.support.raw_http import (
    assert_json_error,
    connection_guard,
    parse_response,
    read_until_closed,
    split_responses,
    statuses,
)
from tests.support.robust import TCP_ESTABLISHED, connections_from_clients_to, eventually

HEALTHZ = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
KEY, BACKGROUND_KEY = "sk-interactive-0123456789", "sk-background-0123456789"
MB = 1024 * 1024


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _send_without_reading(sockets: list[socket.socket], payload: bytes) -> int:
    """Send ``payload`` on every socket, never reading an answer, until all of it is sent or aiosd has
    taken nothing more for a second on any of them (it stopped reading). Returns the bytes sent."""
    sent = dict.fromkeys(sockets, 0)
    while pending := [s for s in sockets if sent[s] < len(payload)]:
        _, writable, _ = select.select([], pending, [], 1.0)
        if not writable:
            break  # a second without room on any socket: aiosd reads no more
        for sock in writable:
            try:
                sent[sock] += sock.send(payload[sent[sock]:sent[sock] + 65536])
            except BlockingIOError:
                continue
    return sum(sent.values())


def test_pipelined_requests_whose_answers_are_not_read_hold_bounded_memory(tmp_path, kernel):
    """Issue 18 item 1: 4 connections x 20,000 pipelined GET /healthz, answers never read, grow aiosd's
    memory by a bounded amount (it queues at most 16 requests per connection and stops reading), and
    it still answers others; before, every request was parsed and queued (+130 MB here, 1.2 GB in the
    issue's 16 x 100,000)."""
    port = free_port()
    daemon = start_daemon(tmp_path, daemon_config(kernel.url, port), port)
    sockets: list[socket.socket] = []
    try:
        pid = daemon.process.pid
        before = _status_kib(pid, "VmRSS")
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            sockets.append(sock)
        _send_without_reading(sockets, HEALTHZ * 20_000)
        assert httpx.get(daemon.url + "/healthz", timeout=10).status_code == 200  # serving others meanwhile
        growth = (_status_kib(pid, "VmHWM") - before) / 1024
        assert growth < 25, f"aiosd's resident memory grew {growth:.0f} MB for 4 connections' unread answers"
    finally:
        for sock in sockets:
            sock.close()
        close_daemon(daemon)


async def test_pipelined_requests_are_all_answered_in_order(tmp_path, kernel):
    """Issue 18 item 1: bounding the pipeline loses nothing: 3,000 pipelined requests on one connection,
    read by the client, get 3,000 answers in order (the last one closing the connection)."""
    async with serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        ids = [f"pipelined-{i}" for i in range(3000)]
        writer.write(b"".join(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-request-id: %s\r\n%s\r\n"
                              % (rid.encode(), b"connection: close\r\n" if rid == ids[-1] else b"")
                              for rid in ids))
        raw = await read_until_closed(reader, timeout=60)
        writer.close()
    answers = split_responses(raw)
    assert [headers["x-request-id"] for _, headers, _ in answers] == ids
    assert {status for status, _, _ in answers} == {200}


@pytest.mark.parametrize("complete", [False, True], ids=["unterminated", "complete"])
async def test_a_second_head_in_the_same_packet_is_held_to_the_cap(tmp_path, kernel, complete):
    """Issue 18 item 1: a request head that follows another in the same packet gets 431 past
    server.max_header_bytes, like the first head of a connection; the request before it is answered
    first. Before, only the first head of a read was measured: the second took ~250 KB (and a
    complete one was served)."""
    config = config_for(tmp_path, kernel.url, "server: {max_header_bytes: 16384}")
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        # 40 KB: over the cap, and within one read of aiosd's (so it arrives with the head before it).
        second = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 40_000
        writer.write(HEALTHZ + second + (b"\r\n\r\n" if complete else b""))
        raw = await read_until_closed(reader)
        writer.close()
    assert statuses(raw) == [200, 431], raw[:500]
    error = json.loads(split_responses(raw)[1][2])["error"]
    assert "server.max_header_bytes" in error["message"]


async def test_a_head_right_after_a_chunked_body_is_held_to_the_cap(tmp_path, kernel):
    """Issue 18 item 1: the head after a chunked body in the same packet is measured from its start too."""
    config = config_for(tmp_path, kernel.url, "server: {max_header_bytes: 16384}")
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        chunked = (b"POST /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                   b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        writer.write(chunked + b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 40_000 + b"\r\n\r\n")
        raw = await read_until_closed(reader)
        writer.close()
    assert statuses(raw) == [405, 431], raw[:500]


# --- item 3: body drips ---------------------------------------------------------------------------


async def test_a_body_that_trickles_steadily_gets_408_at_the_body_deadline(tmp_path, kernel):
    """Issue 18 item 3: a body that never pauses long enough for body_timeout but is not whole within
    server.body_deadline gets 408 naming the key; before, one byte every few seconds held the
    connection for as long as the client liked."""
    config = config_for(tmp_path, kernel.url, 'server: {body_timeout: "30s", body_deadline: "400ms"}')
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"content-length: 100000\r\n\r\n{")

        async def drip():
            while True:
                await asyncio.sleep(0.05)
                writer.write(b" ")

        dripping = asyncio.create_task(drip())
        try:
            raw = await read_until_closed(reader, timeout=10)
        finally:
            dripping.cancel()
            writer.close()
        error = assert_json_error(raw, 408, "request_timeout")
        assert "server.body_deadline" in error["message"]
    assert kernel.queries == []


async def test_a_keys_dripping_bodies_cannot_take_every_connection(tmp_path, kernel):
    """Issue 18 item 3: a background key (max_in_flight 1, max_queued 5) holding every connection with
    bodies it sends a byte of and then nothing: an interactive request is still served, because a
    connection whose request stalled is answered 503 to make room. Before, every interactive request
    got 503 (or a reset) until the drips ended."""
    config = config_for(tmp_path, kernel.url, f"""
auth:
  keys:
    - {{key: "{KEY}", name: interactive}}
    - {{key: "{BACKGROUND_KEY}", name: batch, priority: background, max_in_flight: 1, max_queued: 5}}
server: {{max_connections: 10}}
""")
    async with serve_aiosd(config) as aiosd:
        port = aiosd.runtime.bound_port
        drips = []
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                         b"authorization: Bearer " + BACKGROUND_KEY.encode() + b"\r\ncontent-length: 100000\r\n\r\n{")
            drips.append((reader, writer))
        await eventually(lambda: connections_from_clients_to(port, TCP_ESTABLISHED) == 10, what="10 drips held")
        connection_guard(aiosd).stall_grace = 0.0  # the drips have been quiet for longer than the grace
        answers = []
        for _ in range(3):  # three interactive clients, one connection each
            async with httpx.AsyncClient(base_url=aiosd.url, headers={"authorization": f"Bearer {KEY}"}) as client:
                answers.append((await client.post("/v1/chat/completions", json=CHAT)).status_code)
        assert answers == [200, 200, 200]
        # The drip quiet longest made room (once: each interactive client's connection closed after it); on
        # uvloop, whose clock ticks per millisecond, drips sent within the same millisecond tie.
        reads = [asyncio.create_task(read_until_closed(reader)) for reader, _ in drips]
        done, pending = await asyncio.wait(reads, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        assert len(done) == 1, "no drip was answered 503 to make room"
        raw = done.pop().result()
        assert "server.max_connections" in assert_json_error(raw, 503, "too_many_connections")["message"]
        assert parse_response(raw)[1]["retry-after"] == "1"
        for _, writer in drips:
            writer.close()


async def test_bodies_still_dripping_after_their_401_cannot_take_every_connection(tmp_path, kernel):
    """Issue 18 item 3: clients without a key get 401 before their body is read; their bodies dripping on
    after it hold no connection a keyed client needs."""
    config = config_for(tmp_path, kernel.url, f'auth: {{keys: ["{KEY}"]}}\nserver: {{max_connections: 5}}')
    async with serve_aiosd(config) as aiosd:
        drips = []
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                         b"content-length: 100000\r\n\r\n{")
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 401")
            writer.write(b" ")  # the body goes on arriving after the answer
            drips.append(writer)
        connection_guard(aiosd).stall_grace = 0.0
        async with httpx.AsyncClient(base_url=aiosd.url, headers={"authorization": f"Bearer {KEY}"}) as client:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        for writer in drips:
            writer.close()


# --- item 11: overload answers are 503, not resets --------------------------------------------------


# asyncio's loop only: the client here shares the server's loop, and on uvloop its requests reach the last
# connections before aiosd accepts them; the refusals past the lingering budget then close with the request
# unread, which resets after the answer (a bound kept on purpose). The real daemon, on uvloop: just below.
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_burst_over_the_connection_cap_gets_answers_or_503_never_a_reset(tmp_path, kernel):
    """Issue 18 item 11: 40 connections opened at once against max_connections 20, then a request on
    each: 20 answered 200, 20 answered 503 with Retry-After, none an empty reply or a reset. Before,
    the connections past the cap closed the earlier ones whose request had not arrived yet (20 empty
    replies here; 764 of 2,000 in the issue)."""
    config = config_for(tmp_path, kernel.url, "server: {max_connections: 20}")
    async with serve_aiosd(config) as aiosd:
        port = aiosd.runtime.bound_port
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        for _, writer in connections:
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        outcomes = []
        for reader, writer in connections:
            try:
                raw = await read_until_closed(reader)
            except ConnectionError as exc:
                raw = repr(exc).encode()
            writer.close()
            if not raw.startswith(b"HTTP/1.1"):
                outcomes.append(raw.decode() or "empty reply")
                continue
            status, headers, _ = parse_response(raw)
            outcomes.append(status if status != 503 else f"503 retry-after {headers.get('retry-after')}")
    assert sorted(outcomes, key=str) == [200] * 20 + ["503 retry-after 1"] * 20


def test_the_daemon_on_uvloop_answers_every_connection_of_a_burst_over_the_cap_with_200_or_503(tmp_path, kernel):
    """The same burst against a real daemon (its own process, on uvloop: server.event_loop's default): every
    client gets its whole answer, 200 or 503 with Retry-After. On uvloop the refusals past the lingering
    budget close after the 503 is out but with the client's request unread, so those clients may see a
    reset after the answer (asyncio's loop happens to close before the request arrives)."""
    port = free_port()
    config = daemon_config(kernel.url, port).replace("server: {", "server: {max_connections: 20, ")
    daemon = start_daemon(tmp_path, config, port)
    try:
        connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        for sock in connections:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        outcomes = []
        for sock in connections:
            raw = b""
            try:
                while chunk := sock.recv(65536):
                    raw += chunk
            except ConnectionResetError:
                pass  # after the answer: parse_response below needs all of it
            sock.close()
            status, headers, body = parse_response(raw)
            assert len(body) == int(headers["content-length"]), raw  # the whole answer
            outcomes.append(status if status != 503 else f"503 retry-after {headers.get('retry-after')}")
        started = next(line for line in daemon.process.stderr_lines() if "listening on http://" in line)
    finally:
        close_daemon(daemon)
    assert started.endswith("event loop uvloop")
    assert sorted(outcomes, key=str) == [200] * 20 + ["503 retry-after 1"] * 20


async def test_at_the_cap_a_truly_idle_connection_makes_room(tmp_path, kernel):
    """Issue 18 item 11: a kept-alive connection with nothing in flight is still closed to make room for a
    new client (it has no request to lose), so idle keep-alives cannot lock clients out."""
    config = config_for(tmp_path, kernel.url, "server: {max_connections: 2}")
    async with serve_aiosd(config) as aiosd:
        idle = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
            writer.write(HEALTHZ)
            assert (await reader.readuntil(b'{"status":"ok"}')).startswith(b"HTTP/1.1 200")
            idle.append((reader, writer))
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            assert (await client.get("/healthz")).status_code == 200
        assert await read_until_closed(idle[0][0]) == b""  # the longest idle, closed without a word
        for _, writer in idle:
            writer.close()
